//! The Kubernetes base (`deploy/kubernetes/`) and the `Containerfile`: the
//! manifests parse and the kustomization lists files that exist; the agent
//! config in the ConfigMap passes `dice-agent --check` against folders laid
//! out as kubelet mounts them (`..data` symlinks), and the real agent serves
//! the probes from it and follows a Secret renewal; the probes, ports and
//! mounts match the config's listeners and files; the pod is locked down;
//! `fleet-from-pods.py` turns `kubectl get pods -o json` into a fleet file
//! that dicectl runs with.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dice_tests::client::ServingStatus;
use dice_tests::fixtures::workspace_root;
use dice_tests::kubernetes::{Base, base_dir, documents, file_mode, seq_at, str_at};
use dice_tests::pki::LeafSpec;
use dice_tests::process::{RUN_TIMEOUT, run_with_timeout};
use dice_tests::rotation::{KubeVolume, await_ok, await_serial, tls_secret};
use dice_tests::{Agent, Client, Pki, bins, tempdir};
use serde_yaml_ng::Value;

/// The ConfigMap kustomize generates from node.toml.
const CONFIG_MAP: &str = "dice-agent-config";

/// A deadline for the agent to answer a probe.
const DEADLINE: Duration = Duration::from_secs(10);

/// The keys cert-manager writes into a Certificate's Secret, by the config
/// key that names each.
const SECRET_KEYS: [(&str, &str); 3] = [
    ("cert", "tls.crt"),
    ("key", "tls.key"),
    ("client_ca", "ca.crt"),
];

/// The DaemonSet's one container.
fn container(daemonset: &Value) -> &Value {
    match seq_at(
        &daemonset["spec"]["template"]["spec"]["containers"],
        "containers",
    ) {
        [one] => one,
        more => panic!("expected one container, found {}", more.len()),
    }
}

/// The config the ConfigMap carries, parsed.
fn configmap_config(base: &Base) -> (String, toml::Table) {
    let (key, path) = base.config_map_file(CONFIG_MAP);
    let text = std::fs::read_to_string(&path).expect("read the ConfigMap's config");
    let table = toml::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert_eq!(key, "node.toml");
    (text, table)
}

/// The listener `name` of `config`: `(address, mode)`.
fn listener<'a>(config: &'a toml::Table, name: &str) -> (&'a str, &'a str) {
    let listener = config["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .find(|listener| listener.get("name").and_then(toml::Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("the ConfigMap's config has no listener {name}"));
    let get = |key: &str| {
        listener
            .get(key)
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
    };
    (get("address"), get("mode"))
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{address}: no port"))
}

/// `--config FILE` from the container's args.
fn config_arg(container: &Value) -> PathBuf {
    let args: Vec<&str> = seq_at(&container["args"], "container args")
        .iter()
        .map(|arg| str_at(arg, "an arg"))
        .collect();
    let at = args
        .iter()
        .position(|arg| *arg == "--config")
        .expect("args hold --config");
    PathBuf::from(args.get(at + 1).expect("--config FILE"))
}

/// The volume mounted at `mount_path` in the container, and that volume's spec.
fn volume_at<'a>(daemonset: &'a Value, mount_path: &Path) -> &'a Value {
    let mount = seq_at(&container(daemonset)["volumeMounts"], "volumeMounts")
        .iter()
        .find(|mount| Path::new(str_at(&mount["mountPath"], "mountPath")) == mount_path)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", mount_path.display()));
    assert_eq!(
        mount["readOnly"].as_bool(),
        Some(true),
        "{mount:?} should be read-only"
    );
    assert!(
        mount["subPath"].is_null(),
        "{mount:?}: a subPath mount never sees updates"
    );
    let name = str_at(&mount["name"], "a mount's volume name");
    seq_at(&daemonset["spec"]["template"]["spec"]["volumes"], "volumes")
        .iter()
        .find(|volume| volume["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The ConfigMap and Secret folders as kubelet mounts them under `root`, the
/// key with the Secret volume's defaultMode; returns the config path inside
/// and the Secret volume, to swap.
fn mount_like_kubelet(base: &Base, root: &Path, pki: &Pki) -> (PathBuf, KubeVolume) {
    let daemonset = base.find("DaemonSet", "dice-agent");
    let (text, config) = configmap_config(base);
    let config_path = config_arg(container(daemonset));
    let tls = config["tls"].as_table().expect("[tls]");
    let secret_dir = Path::new(tls["cert"].as_str().expect("tls.cert"))
        .parent()
        .expect("a folder")
        .to_owned();
    let mounted = |path: &Path| root.join(path.strip_prefix("/").expect("absolute"));

    let secret = volume_at(daemonset, &secret_dir);
    let volume = KubeVolume::new(
        &mounted(&secret_dir),
        &tls_secret(
            pki.server(),
            &std::fs::read(pki.ca_cert()).expect("read the CA"),
        ),
    );
    let mode = file_mode(&secret["secret"]["defaultMode"]);
    chmod_all(volume.current(), mode);

    // The config names the mounted files: rewrite the folder, nothing else.
    let prefix = format!("\"{}/", secret_dir.display());
    let moved = format!("\"{}/", mounted(&secret_dir).display());
    let config_dir = config_path.parent().expect("a config folder");
    KubeVolume::new(
        &mounted(config_dir),
        &[("node.toml", text.replace(&prefix, &moved).into_bytes())],
    );
    (mounted(&config_path), volume)
}

fn chmod_all(dir: &Path, mode: u32) {
    for entry in std::fs::read_dir(dir).expect("list a volume") {
        let path = entry.expect("a volume entry").path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

// === the files ===

#[test]
fn kubernetes_manifests_parse_and_the_kustomization_lists_files_that_exist() {
    let base = Base::load();
    let listed: Vec<PathBuf> = base
        .resources
        .iter()
        .map(|(path, _)| path.clone())
        .collect();
    for entry in std::fs::read_dir(base_dir()).expect("list deploy/kubernetes") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            assert!(!documents(&path).is_empty(), "{} is empty", path.display());
            assert!(
                path.ends_with("kustomization.yaml") || listed.contains(&path),
                "{} is not in kustomization.yaml's resources",
                path.display()
            );
        }
    }
    for (path, docs) in &base.resources {
        for doc in docs {
            assert!(
                doc["apiVersion"].is_string()
                    && doc["kind"].is_string()
                    && doc["metadata"]["name"].is_string(),
                "{}: a manifest without apiVersion, kind or name",
                path.display()
            );
        }
    }
    base.config_map_file(CONFIG_MAP);
    // The image the kustomization retags is the container's.
    let daemonset = base.find("DaemonSet", "dice-agent");
    let image = str_at(&container(daemonset)["image"], "image");
    assert!(
        seq_at(&base.kustomization["images"], "images")
            .iter()
            .any(|entry| entry["name"].as_str() == Some(image)),
        "kustomization images do not name {image}"
    );
}

// === the config against the mounts ===

#[test]
fn kubernetes_configmap_config_passes_check_in_folders_mounted_as_kubelet_does() {
    let base = Base::load();
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let (config, _secret) = mount_like_kubelet(&base, &dir.path().join("pod"), &pki);
    assert!(
        std::fs::symlink_metadata(&config).is_ok_and(|meta| meta.file_type().is_symlink()),
        "the config should be reached through ..data"
    );
    let mut command = Command::new(bins::agent_bin());
    command.arg("--config").arg(&config).arg("--check");
    run_with_timeout(command, RUN_TIMEOUT).assert_success();
}

#[tokio::test]
async fn kubernetes_agent_answers_the_probe_and_follows_a_secret_renewal() {
    let base = Base::load();
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let (config, mut secret) = mount_like_kubelet(&base, &dir.path().join("pod"), &pki);
    // The pod's addresses, moved to ephemeral loopback ports for the test.
    let text = std::fs::read_to_string(&config).expect("read the mounted config");
    let (_, table) = configmap_config(&base);
    let mut local = text.clone();
    for name in ["public", "health"] {
        let (address, _) = listener(&table, name);
        local = local.replace(&format!("\"{address}\""), "\"127.0.0.1:0\"");
    }
    assert_ne!(local, text, "the listeners' addresses were not found");
    let agent_dir = tempfile::Builder::new()
        .prefix("dice-agent-")
        .tempdir()
        .expect("a temp dir");
    let local_config = agent_dir.path().join("node.toml");
    std::fs::write(&local_config, local).expect("write the local config");
    // What the DaemonSet sets from the downward API (spec.nodeName).
    let node_name = std::ffi::OsStr::new("worker-3");
    let agent = Agent::spawn_file_env(
        agent_dir,
        local_config,
        &[],
        &[("DICE_NODE_NAME", node_name)],
    );

    // What kubelet's gRPC probe asks: the overall health, without a certificate.
    let probe = Client::h2c(agent.addr("health"))
        .await
        .expect("connect to the health listener");
    await_ok(
        DEADLINE,
        format_args!("SERVING on the probe port"),
        async || match probe.health("").await {
            Ok(ServingStatus::Serving) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;

    // The agent names itself after its Kubernetes node, not the shared config's node.name.
    let info = Client::mtls(agent.addr("public"), &pki.client_tls())
        .await
        .expect("connect over mTLS")
        .info()
        .await
        .expect("the info API");
    assert_eq!(info.node, "worker-3", "the node name from DICE_NODE_NAME");

    // cert-manager renews: kubelet swaps ..data, the agent serves the new certificate.
    let renewed = pki.issue(&LeafSpec::server("renewed").sans(["localhost", "127.0.0.1"]));
    let ca = std::fs::read(pki.ca_cert()).expect("read the CA");
    secret.swap(&tls_secret(&renewed, &ca));
    chmod_all(secret.current(), 0o440);
    await_serial(agent.addr("public"), &pki.client_tls(), renewed.serial()).await;
}

#[test]
fn kubernetes_probes_ports_mounts_and_certificate_match_the_config() {
    let base = Base::load();
    let daemonset = base.find("DaemonSet", "dice-agent");
    let container = container(daemonset);
    let (_, config) = configmap_config(&base);

    // Each listener binds every interface (or kubelet and peers cannot reach
    // it) on the port the container declares under the listener's name.
    let ports = seq_at(&container["ports"], "container ports");
    let container_port = |name: &str| -> u16 {
        let port = ports
            .iter()
            .find(|port| port["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no container port named {name}"));
        port["containerPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("a port number")
    };
    let (public, public_mode) = listener(&config, "public");
    let (health, health_mode) = listener(&config, "health");
    assert_eq!((public_mode, health_mode), ("mtls", "health"));
    for address in [public, health] {
        assert!(
            address.starts_with("0.0.0.0:") || address.starts_with("[::]:"),
            "{address}: bind every interface in a pod"
        );
    }
    assert_eq!(container_port("mtls"), port_of(public));
    assert_eq!(container_port("health"), port_of(health));

    // Each pod names itself after its node: DICE_NODE_NAME from the downward API.
    let node_name = seq_at(&container["env"], "container env")
        .iter()
        .find(|var| var["name"].as_str() == Some("DICE_NODE_NAME"))
        .expect("DICE_NODE_NAME in the container's env");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName"),
        "DICE_NODE_NAME from the pod's node"
    );

    // Both probes are gRPC probes of the health listener: readiness for the
    // node's status, liveness for the process alone (a lapsed certificate
    // must not restart the pod into a crash loop).
    for (probe, service) in [("readinessProbe", ""), ("livenessProbe", "liveness")] {
        let grpc = &container[probe]["grpc"];
        assert_eq!(
            grpc["port"].as_u64(),
            Some(u64::from(port_of(health))),
            "{probe} port"
        );
        assert_eq!(
            grpc["service"].as_str().unwrap_or(""),
            service,
            "{probe}'s service"
        );
    }

    // The Service reaches the mtls listener by the port's name.
    let service = base.find("Service", "dice-agent");
    let service_port = &seq_at(&service["spec"]["ports"], "service ports")[0];
    assert_eq!(service_port["targetPort"].as_str(), Some("mtls"));

    // The config is the ConfigMap's key, in the folder the ConfigMap is mounted at.
    let config_path = config_arg(container);
    let volume = volume_at(daemonset, config_path.parent().expect("a folder"));
    assert_eq!(volume["configMap"]["name"].as_str(), Some(CONFIG_MAP));
    assert_eq!(
        config_path.file_name().and_then(|n| n.to_str()),
        Some("node.toml")
    );

    // The tls files are the Certificate's Secret's keys, in the folder it is mounted at.
    let certificate = base.find("Certificate", "dice-agent");
    let secret_name = str_at(&certificate["spec"]["secretName"], "secretName");
    let tls = config["tls"].as_table().expect("[tls]");
    for (key, file) in SECRET_KEYS {
        let path = Path::new(tls[key].as_str().unwrap_or_else(|| panic!("tls.{key}")));
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(file),
            "tls.{key}"
        );
        let volume = volume_at(daemonset, path.parent().expect("a folder"));
        assert_eq!(
            volume["secret"]["secretName"].as_str(),
            Some(secret_name),
            "tls.{key}"
        );
    }
    let issuer = &certificate["spec"]["issuerRef"];
    assert_eq!(issuer["kind"].as_str(), Some("Issuer"));
    assert_eq!(issuer["name"].as_str(), Some("dice-fleet-ca"));
    // dicectl checks the Service's name, which the certificate must hold.
    let dns_names: Vec<&str> = seq_at(&certificate["spec"]["dnsNames"], "dnsNames")
        .iter()
        .map(|name| str_at(name, "a DNS name"))
        .collect();
    let service_dns = format!("dice-agent.{}.svc", base.namespace());
    assert!(
        dns_names.contains(&service_dns.as_str()),
        "{dns_names:?} lacks {service_dns}"
    );
}

// === locked down ===

#[test]
fn kubernetes_pod_runs_non_root_read_only_without_capabilities_and_with_resources() {
    let base = Base::load();
    let daemonset = base.find("DaemonSet", "dice-agent");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = container(daemonset);
    let (_, config) = configmap_config(&base);

    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .is_some_and(|uid| uid > 0)
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    let dropped: Vec<&str> = seq_at(&security["capabilities"]["drop"], "capabilities drop")
        .iter()
        .map(|cap| str_at(cap, "a capability"))
        .collect();
    assert_eq!(dropped, ["ALL"]);
    assert!(
        security["capabilities"]["add"].is_null(),
        "no capability is added"
    );
    for (kind, resource) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "cpu"),
        ("limits", "memory"),
    ] {
        assert!(
            !container["resources"][kind][resource].is_null(),
            "resources.{kind}.{resource} is not set"
        );
    }

    // SIGTERM drains for shutdown.grace_period: the pod must be given longer.
    let grace = config["shutdown"]["grace_period"]
        .as_str()
        .expect("shutdown.grace_period");
    let grace: u64 = grace
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .expect("grace in seconds");
    let termination = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        termination > grace,
        "terminationGracePeriodSeconds {termination} <= grace {grace}"
    );
}

#[test]
fn kubernetes_containerfile_builds_locked_and_runs_non_root() {
    let path = workspace_root().join("Containerfile");
    let text = std::fs::read_to_string(&path).expect("read the Containerfile");
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let froms: Vec<&str> = instructions
        .iter()
        .copied()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(
        instructions
            .iter()
            .any(|line| line.starts_with("RUN cargo build")
                && line.contains("--locked")
                && line.contains("--release")),
        "the build stage builds release binaries from Cargo.lock"
    );
    assert!(
        !froms[1].contains("rust:"),
        "the runtime stage carries no toolchain: {}",
        froms[1]
    );
    let user = instructions
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "USER {user}"
    );
    // The image's default config is where the DaemonSet mounts it.
    let daemonset = Base::load();
    let config = config_arg(container(daemonset.find("DaemonSet", "dice-agent")));
    assert!(
        instructions
            .iter()
            .any(|line| line.starts_with("CMD")
                && line.contains(&format!("\"{}\"", config.display()))),
        "the Containerfile's CMD does not use {}",
        config.display()
    );
}

// === the fleet file from kubectl ===

/// Runs `deploy/kubernetes/fleet-from-pods.py ARGS` on `pods` (a `kubectl
/// get pods -o json` document); returns its output.
fn fleet_from_pods(pods: &str, args: &[&str]) -> dice_tests::process::RunOutput {
    let dir = tempdir();
    let input = dir.path().join("pods.json");
    std::fs::write(&input, pods).expect("write the pods document");
    let script = base_dir().join("fleet-from-pods.py");
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "command -v python3 >/dev/null || {{ echo 'python3 not found: apt-get install python3' >&2; exit 127; }}; \
         exec python3 \"$0\" \"$@\" < \"{}\"",
        input.display()
    ));
    command.arg(&script).args(args);
    run_with_timeout(command, RUN_TIMEOUT)
}

fn sample_pods() -> String {
    let path = workspace_root().join("tests/fixtures/kubernetes/pods.json");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

#[test]
fn kubernetes_fleet_file_from_kubectl_names_running_pods_by_node() {
    let run = fleet_from_pods(
        &sample_pods(),
        &[
            "--ca",
            "ca.pem",
            "--cert",
            "dicectl.pem",
            "--key",
            "dicectl-key.pem",
        ],
    );
    assert_ne!(run.code(), Some(127), "{run}");
    run.assert_success()
        .assert_stderr_contains("pod dice-agent-zz1h0: not running with an IP yet: left out");
    let fleet: toml::Table =
        toml::from_str(&run.stdout).unwrap_or_else(|error| panic!("not TOML: {error}\n{run}"));
    assert_eq!(fleet["client"]["ca"].as_str(), Some("ca.pem"));
    assert_eq!(fleet["client"]["key"].as_str(), Some("dicectl-key.pem"));
    let nodes: Vec<(String, String, String)> = fleet["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| {
            let get = |key: &str| node[key].as_str().unwrap_or_default().to_owned();
            (
                get("name"),
                get("address"),
                node["labels"]["node"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let expect = |name: &str, address: &str, node: &str| {
        (name.to_owned(), address.to_owned(), node.to_owned())
    };
    assert_eq!(
        nodes,
        [
            // Two pods on worker-1 (a rolling update): named by pod.
            expect("dice-agent-b9q4d", "[fd00:10:244:1::5]:8443", "worker-1"),
            expect("dice-agent-c2m8r", "10.244.1.9:8443", "worker-1"),
            expect("worker-2", "10.244.2.17:8443", "worker-2"),
        ]
    );
    assert!(
        fleet["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|node| node["server_name"].as_str() == Some("dice-agent.dice.svc")),
        "server_name: the Service's name, in the agents' certificate"
    );
}

#[test]
fn kubernetes_fleet_file_from_kubectl_works_with_dicectl() {
    let (_dir, pki) = dice_tests::fresh_pki();
    let agent = Agent::spawn(&dice_tests::AgentConfig::standard(&pki));
    let port = agent.mtls_addr().port().to_string();
    // Every pod of the sample, at the test agent's address.
    let pods = ["10.244.2.17", "10.244.1.9", "fd00:10:244:1::5"]
        .iter()
        .fold(sample_pods(), |pods, ip| {
            pods.replace(&format!("\"{ip}\""), "\"127.0.0.1\"")
        });
    let client = pki.client();
    let ca = pki.ca_cert().to_str().expect("a UTF-8 path");
    let cert = client.cert.to_str().expect("a UTF-8 path");
    let key = client.key.to_str().expect("a UTF-8 path");
    let args = [
        "--port",
        &port,
        "--server-name",
        "localhost",
        "--ca",
        ca,
        "--cert",
        cert,
        "--key",
        key,
    ];
    let run = fleet_from_pods(&pods, &args);
    run.assert_success();
    let dir = tempdir();
    let fleet = dir.path().join("fleet.toml");
    std::fs::write(&fleet, &run.stdout).expect("write the fleet file");
    let health = dice_tests::Ctl::run([
        "--fleet",
        fleet.to_str().expect("a UTF-8 path"),
        "--output",
        "json",
        "health",
    ]);
    health.assert_success();
    let report: serde_json::Value = serde_json::from_str(&health.stdout).expect("dicectl's JSON");
    let report = report.to_string();
    for node in ["dice-agent-b9q4d", "dice-agent-c2m8r", "worker-2"] {
        assert!(
            report.contains(&format!("\"{node}\"")),
            "{node} is not in the report\n{health}"
        );
    }
}
