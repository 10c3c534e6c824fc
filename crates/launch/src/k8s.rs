//! The run as Kubernetes Jobs, built from the typed API structs of `k8s-openapi`: one Job per
//! stage, the experts as an Indexed Job (`completionMode: Indexed`; each pod's index in
//! `JOB_COMPLETION_INDEX`, which `smalltalk expert train` reads). The run folder, config and
//! corpus live on a shared volume mounted at the same path as on the machine that wrote the
//! manifests. A pod stopped by SIGTERM (eviction, preemption) checkpoints and exits 143; the
//! Job's pod failure policy ignores that exit (and disruptions), so the replacement pod resumes
//! from the checkpoint without using up `backoffLimit`.

use std::collections::BTreeMap;

/// The Kubernetes Job type the manifests are made of.
pub use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::batch::v1::{
    JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::cluster::ClusterConfig;
use crate::plan::{RunSpec, Stage};
use crate::slurm::{shell_quote, STOPPED_STATUS};

/// The Job of one stage; `binary` is the `smalltalk` executable in the image.
pub fn stage_job(spec: &RunSpec, cluster: &ClusterConfig, stage: &Stage, binary: &str) -> Job {
    let r = cluster.resources(stage.name);
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    requests.insert("cpu".to_string(), Quantity(r.cpus.unwrap_or(1).to_string()));
    if let Some(m) = &r.memory {
        requests.insert("memory".to_string(), Quantity(m.clone()));
    }
    if let Some(g) = r.gpus.filter(|&g| g > 0) {
        limits.insert("nvidia.com/gpu".to_string(), Quantity(g.to_string()));
    }
    // Several commands (data: tokenizer, then build) run one after the other in one shell.
    let script: Vec<String> = stage
        .commands
        .iter()
        .map(|c| {
            let mut words = vec![binary.to_string()];
            words.extend(c.iter().cloned());
            words
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let container = Container {
        name: "smalltalk".into(),
        image: Some(cluster.image.clone()),
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("set -e; {}", script.join("; ")),
        ]),
        env: Some(vec![EnvVar {
            name: "RAYON_NUM_THREADS".into(),
            value: Some(r.cpus.unwrap_or(1).to_string()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "runs".into(),
            mount_path: cluster.mount.clone(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let ignore = |on_exit_codes, on_pod_conditions| PodFailurePolicyRule {
        action: "Ignore".into(),
        on_exit_codes,
        on_pod_conditions,
    };
    let n = stage.array.map(|e| e as i32);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(spec, stage)),
            namespace: Some(cluster.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "smalltalk".to_string(),
                ),
                (
                    "smalltalk/stage".to_string(),
                    stage.name.as_str().to_string(),
                ),
            ])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completion_mode: n.map(|_| "Indexed".to_string()),
            completions: n,
            parallelism: n,
            backoff_limit: Some(cluster.backoff_limit),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    ignore(
                        Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some("smalltalk".into()),
                            operator: "In".into(),
                            values: vec![STOPPED_STATUS],
                        }),
                        None,
                    ),
                    ignore(
                        None,
                        Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: "True".into(),
                        }]),
                    ),
                ],
            }),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    termination_grace_period_seconds: Some(cluster.stop_seconds.into()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "runs".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: cluster.volume_claim.clone(),
                            read_only: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Every stage's Job, in pipeline order.
pub fn jobs(spec: &RunSpec, cluster: &ClusterConfig, binary: &str) -> Vec<Job> {
    spec.stages()
        .iter()
        .map(|s| stage_job(spec, cluster, s, binary))
        .collect()
}

/// Write `RUN/k8s/NN-<stage>.json` (JSON is YAML: `kubectl apply -f` reads it) and
/// `RUN/k8s/apply.sh`, which applies them in order and waits for each to complete. Returns
/// the files written.
pub fn write_manifests(spec: &RunSpec, jobs: &[Job]) -> crate::Result<Vec<std::path::PathBuf>> {
    let dir = spec.run.join("k8s");
    std::fs::create_dir_all(&dir).map_err(|source| crate::LaunchError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut files = Vec::new();
    let mut apply = String::from(
        "#!/bin/sh\n# Written by `smalltalk launch k8s`: applies the stages in order, each after \
         the previous completed.\nset -e\ncd \"$(dirname \"$0\")\"\n",
    );
    for (i, job) in jobs.iter().enumerate() {
        let name = job.metadata.name.clone().unwrap_or_default();
        let stage = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("smalltalk/stage").cloned())
            .unwrap_or_default();
        let file = format!("{i:02}-{stage}.json");
        let text = serde_json::to_string_pretty(job).expect("a Job serialises");
        smalltalk_stage::atomic::write_file(&dir.join(&file), text.as_bytes())?;
        // The namespace is checked ([`ClusterConfig::check_k8s`]) and the name made of
        // DNS-1123 characters; both are quoted all the same.
        let namespace = job.metadata.namespace.as_deref().unwrap_or("default");
        apply.push_str(&format!(
            "kubectl apply -f {}\nkubectl wait --for=condition=complete --timeout=-1s -n {} {}\n",
            shell_quote(&file),
            shell_quote(namespace),
            shell_quote(&format!("job/{name}")),
        ));
        files.push(dir.join(file));
    }
    let script = dir.join("apply.sh");
    smalltalk_stage::atomic::write_file(&script, apply.as_bytes())?;
    files.push(script);
    Ok(files)
}

/// A DNS-1123 name (lowercase letters, digits, `-`; at most 63 characters) for the stage's Job.
fn job_name(spec: &RunSpec, stage: &Stage) -> String {
    let raw = crate::slurm::job_name(spec, stage.name).to_lowercase();
    let mut name: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_string()
}

/// The container's command of a Job, as `/bin/sh -c` would run it.
pub fn container_script(job: &Job) -> Option<String> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    pod.containers.first()?.command.as_ref()?.get(2).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StageName;

    fn spec() -> RunSpec {
        RunSpec {
            run: "/runs/My_Run".into(),
            corpus: vec!["/runs/corpus.jsonl".into()],
            config: "/runs/run.toml".into(),
            experts: 4,
            backend: "cuda".into(),
        }
    }

    #[test]
    fn the_expert_job_is_indexed_and_round_trips_through_the_typed_structs() {
        let mut cluster = ClusterConfig::default();
        cluster.stage.insert(
            "experts".into(),
            crate::cluster::Resources {
                gpus: Some(2),
                ..Default::default()
            },
        );
        let jobs = jobs(&spec(), &cluster, "smalltalk");
        assert_eq!(jobs.len(), StageName::ALL.len());
        let experts = &jobs[3];
        let text = serde_json::to_string(experts).unwrap();
        let back: Job = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, experts);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["apiVersion"], "batch/v1");
        assert_eq!(value["kind"], "Job");
        assert_eq!(value["metadata"]["name"], "smalltalk-my-run-experts");
        let js = &value["spec"];
        assert_eq!(js["completionMode"], "Indexed");
        assert_eq!(
            (js["completions"].as_i64(), js["parallelism"].as_i64()),
            (Some(4), Some(4))
        );
        let rules = &js["podFailurePolicy"]["rules"];
        assert_eq!(rules[0]["onExitCodes"]["values"][0], STOPPED_STATUS);
        let pod = &js["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(
            pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "2"
        );
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "smalltalk-runs"
        );
        let script = container_script(experts).unwrap();
        assert!(
            script.starts_with("set -e; smalltalk --backend cuda expert train"),
            "{script}"
        );
        assert!(
            !script.contains("--expert "),
            "the index comes from JOB_COMPLETION_INDEX"
        );
        // Other stages are plain Jobs; the data Job runs its two commands in order.
        let data = serde_json::to_value(&jobs[0]).unwrap();
        assert!(data["spec"]["completionMode"].is_null());
        let script = container_script(&jobs[0]).unwrap();
        assert!(script.find("data tokenizer").unwrap() < script.find("data build").unwrap());
    }

    #[test]
    fn manifests_and_the_apply_script_are_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.run = dir.path().join("run");
        let files = write_manifests(&s, &jobs(&s, &ClusterConfig::default(), "smalltalk")).unwrap();
        assert_eq!(files.len(), StageName::ALL.len() + 1);
        let job: Job = serde_json::from_str(&std::fs::read_to_string(&files[3]).unwrap()).unwrap();
        assert_eq!(
            job.spec.unwrap().completion_mode.as_deref(),
            Some("Indexed")
        );
        let apply = std::fs::read_to_string(files.last().unwrap()).unwrap();
        let data = apply.find("00-data.json").unwrap();
        assert!(data < apply.find("03-experts.json").unwrap());
        assert!(apply.contains("kubectl wait --for=condition=complete"));
    }
}
