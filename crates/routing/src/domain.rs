//! The `domain` routing method (the oracle upper bound DEMix uses): the corpus's own domain
//! labels, grouped into E parts as even as the domains' sizes allow. Routing reads a row's
//! label, not its text, so it needs labelled data for partitioning and for evaluation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RoutingError};

/// Which expert each domain goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainGroups {
    /// Expert of every domain, by name.
    pub experts_of: BTreeMap<String, u32>,
    /// Number of experts, E.
    pub experts: usize,
}

impl DomainGroups {
    /// Group domains with `rows[d]` training rows each (names `names[d]`) into `experts`
    /// parts: largest domain first, each to the part with the fewest rows so far (ties to the
    /// lowest index). Refuses a corpus without labels and fewer domains than experts.
    pub fn fit(names: &[String], rows: &[u64], experts: usize) -> Result<Self> {
        if names.is_empty() || rows.iter().all(|&r| r == 0) {
            return Err(RoutingError::Config(
                "the `domain` method needs domain labels, and this dataset has none (give the corpus a `domain` field)"
                    .into(),
            ));
        }
        let present = rows.iter().filter(|&&r| r > 0).count();
        if present < experts {
            return Err(RoutingError::Config(format!(
                "the `domain` method needs at least as many domains as experts: {present} domains with rows, {experts} experts"
            )));
        }
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| rows[b].cmp(&rows[a]).then(a.cmp(&b)));
        let mut load = vec![0u64; experts];
        let mut experts_of = BTreeMap::new();
        for d in order {
            let e = (0..experts)
                .min_by_key(|&e| (load[e], e))
                .expect("experts > 0");
            load[e] += rows[d];
            experts_of.insert(names[d].clone(), e as u32);
        }
        Ok(DomainGroups {
            experts_of,
            experts,
        })
    }

    /// The expert of domain `name`.
    pub fn expert(&self, name: &str) -> Result<u32> {
        self.experts_of.get(name).copied().ok_or_else(|| {
            RoutingError::Config(format!(
                "domain `{name}` was not among the domains the `domain` router was fitted on"
            ))
        })
    }

    /// The expert of each row, from its label (an index into `names`, `u32::MAX` = none).
    pub fn route_labels(&self, labels: &[u32], names: &[String]) -> Result<Vec<u32>> {
        labels
            .iter()
            .map(|&l| match names.get(l as usize) {
                Some(name) => self.expert(name),
                None => Err(RoutingError::Config(
                    "a row has no domain label, and the `domain` method routes by label".into(),
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_grouped_evenly_and_unlabelled_corpora_refused() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let g = DomainGroups::fit(&names, &[50, 40, 30, 20, 10], 2).unwrap();
        let load = |e: u32| -> u64 {
            names
                .iter()
                .zip([50, 40, 30, 20, 10])
                .filter(|(n, _)| g.experts_of[*n] == e)
                .map(|(_, r)| r)
                .sum()
        };
        assert_eq!((load(0), load(1)), (80, 70));
        assert_eq!(g.route_labels(&[0, 4, 1], &names).unwrap(), vec![0, 0, 1]);
        assert!(g.route_labels(&[u32::MAX], &names).is_err());
        let err = DomainGroups::fit(&[], &[], 2).unwrap_err().to_string();
        assert!(err.contains("needs domain labels"), "{err}");
        assert!(DomainGroups::fit(&names[..1], &[5], 2).is_err());
    }
}
