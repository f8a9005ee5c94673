//! `[[discovery]]` in the fleet file, against real servers on 127.0.0.1: the
//! real dnsmasq serving SRV records, a Prometheus HTTP SD endpoint (plain and
//! HTTPS with a client certificate), a `file_sd` YAML file, and real agents.
//! Discovered nodes are merged with `[[nodes]]` (a node found twice is one
//! node, with every source named), selected by their labels and rolled; each
//! way a source can fail is named on stderr and makes the exit status 1
//! unless `--allow-partial-discovery`; `--output jsonl` lines parse and the
//! first arrives while a slow node is still being waited for.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use dice_tests::discovery::{Dnsmasq, SdReply, SdServer, Srv, spawn_ctl, toml_path};
use dice_tests::fleet::{FleetFile, FleetNode, SilentPeer, run_ctl_in};
use dice_tests::{Agent, AgentConfig, LeafSpec, ListenerConfig, Pki, RunOutput, tempdir};
use serde_json::Value;

const SRV_NAME: &str = "_dice._tcp.fleet.example";

/// An agent whose certificate holds `names` besides `localhost` and `127.0.0.1`.
fn agent_named(pki: &Pki, node: &str, names: &[&str]) -> Agent {
    let mut sans = vec!["localhost", "127.0.0.1"];
    sans.extend_from_slice(names);
    let identity = pki.issue(&LeafSpec::server(node).sans(sans));
    Agent::spawn(
        &AgentConfig::new(node)
            .tls(pki.tls_files_for(&identity))
            .listener(ListenerConfig::mtls("mtls")),
    )
}

/// Writes `fleet` plus the raw `[[discovery]]` TOML to `dir/fleet.toml`.
fn write_fleet(dir: &Path, fleet: &FleetFile, discovery: &str) {
    std::fs::write(
        dir.join("fleet.toml"),
        format!("{}\n{discovery}", fleet.to_toml()),
    )
    .expect("write the fleet file");
}

fn json(run: &RunOutput) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|error| panic!("stdout is not JSON: {error}\n{run}"))
}

/// The node of a `nodes` document named `name`.
fn node<'a>(document: &'a Value, name: &str) -> &'a Value {
    (document["nodes"].as_array().expect("nodes"))
        .iter()
        .find(|node| node["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {document:#}"))
}

fn names(document: &Value) -> Vec<&str> {
    (document["nodes"].as_array().expect("nodes"))
        .iter()
        .map(|node| node["name"].as_str().expect("a name"))
        .collect()
}

#[test]
fn dns_srv_nodes_are_merged_with_static_ones_and_rolled() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let one = agent_named(&pki, "node-1", &["node-1.fleet.example"]);
    let two = agent_named(&pki, "node-2", &["node-2.fleet.example"]);
    let dns = Dnsmasq::spawn(
        "fleet.example",
        &[
            Srv {
                name: SRV_NAME.into(),
                target: "node-1.fleet.example".into(),
                port: one.mtls_addr().port(),
                priority: 10,
                weight: 20,
            },
            Srv {
                name: SRV_NAME.into(),
                target: "node-2.fleet.example".into(),
                port: two.mtls_addr().port(),
                priority: 20,
                weight: 5,
            },
        ],
        &[
            ("node-1.fleet.example", "127.0.0.1"),
            ("node-2.fleet.example", "127.0.0.1"),
        ],
    );
    // node-2 is also listed by hand, under its address and certificate name.
    let mut fleet = FleetFile::new(&pki).timeout("2s");
    fleet.nodes.push(FleetNode {
        name: "static-two".into(),
        address: two.mtls_addr().to_string(),
        server_name: Some("node-2.fleet.example".into()),
        labels: vec![("region".into(), "eu".into())],
    });
    write_fleet(
        dir.path(),
        &fleet,
        &format!(
            "[[discovery]]\nkind = \"dns_srv\"\nname = \"{SRV_NAME}\"\nserver = \"{}\"\n",
            dns.addr
        ),
    );

    let (listed, _) = run_ctl_in(dir.path(), ["nodes", "--output", "json"]);
    listed.assert_success();
    let document = json(&listed);
    assert_eq!(
        names(&document),
        ["node-1.fleet.example", "static-two"],
        "{listed}"
    );
    let found = node(&document, "node-1.fleet.example");
    assert_eq!(
        found["address"],
        format!("127.0.0.1:{}", one.mtls_addr().port())
    );
    assert_eq!(found["server_name"], "node-1.fleet.example");
    assert_eq!(found["source"], format!("dns_srv:{SRV_NAME}"));
    assert_eq!(
        found["labels"],
        serde_json::json!({"priority": "10", "weight": "20"})
    );
    let merged = node(&document, "static-two");
    assert_eq!(merged["source"], format!("static,dns_srv:{SRV_NAME}"));
    assert_eq!(
        merged["labels"],
        serde_json::json!({"priority": "20", "region": "eu", "weight": "5"})
    );
    assert_eq!(document["discovery"][0]["found"], 2);

    let (rolled, _) = run_ctl_in(dir.path(), ["roll", "--all", "--output", "json"]);
    rolled.assert_success();
    assert_eq!(json(&rolled)["summary"]["ok"], 2, "{rolled}");

    // Labels from DNS select like static ones.
    let (by_label, _) = run_ctl_in(
        dir.path(),
        ["roll", "--label", "priority=10", "--output", "json"],
    );
    by_label.assert_success();
    assert_eq!(
        names(&json(&by_label)),
        ["node-1.fleet.example"],
        "{by_label}"
    );
}

#[test]
fn http_sd_and_file_sd_nodes_are_listed_selected_and_rolled() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let agent = agent_named(&pki, "web", &[]);
    let port = agent.mtls_addr().port();
    let targets = format!(
        r#"[{{"targets": ["127.0.0.1:{port}"], "labels": {{"name": "web-1", "tier": "web"}}}}]"#
    );
    let plain = SdServer::http(SdReply::json(targets.clone()));
    let https = SdServer::https(SdReply::json(targets), &pki);
    // file_sd, relative to the fleet file: the same agent under another address.
    std::fs::create_dir(dir.path().join("sd")).expect("mkdir");
    std::fs::write(
        dir.path().join("sd/db.yaml"),
        format!("- targets: [\"localhost:{port}\"]\n  labels:\n    tier: db\n"),
    )
    .expect("write sd/db.yaml");
    let client = pki.client();
    write_fleet(
        dir.path(),
        &FleetFile::new(&pki).timeout("2s"),
        &format!(
            "[[discovery]]\nkind = \"http_sd\"\nurl = \"{}\"\n\n\
             [[discovery]]\nkind = \"http_sd\"\nurl = \"{}\"\nca = {}\ncert = {}\nkey = {}\n\n\
             [[discovery]]\nkind = \"file_sd\"\npath = \"sd/db.yaml\"\n",
            plain.url(false),
            https.url(true),
            toml_path(pki.ca_cert()),
            toml_path(&client.cert),
            toml_path(&client.key),
        ),
    );

    let (listed, _) = run_ctl_in(dir.path(), ["nodes"]);
    listed.assert_success();
    let table = &listed.stdout;
    assert!(
        table.starts_with("NODE"),
        "the table opens with its header\n{listed}"
    );
    // Found by both endpoints: one node, both sources named.
    let rows: Vec<Vec<&str>> = (table.lines())
        .map(|line| line.split_whitespace().collect())
        .collect();
    let sources = format!("http_sd:{},http_sd:{}", plain.url(false), https.url(true));
    let web = format!("127.0.0.1:{port}");
    assert!(
        rows.contains(&vec![
            "web-1",
            &web,
            "127.0.0.1",
            "name=web-1,tier=web",
            &sources
        ]),
        "{listed}"
    );
    let db = format!("localhost:{port}");
    assert!(
        rows.contains(&vec![
            &db,
            &db,
            "localhost",
            "tier=db",
            "file_sd:sd/db.yaml"
        ]),
        "{listed}"
    );

    let (db_only, _) = run_ctl_in(
        dir.path(),
        ["roll", "--label", "tier=db", "--output", "json"],
    );
    db_only.assert_success();
    assert_eq!(names(&json(&db_only)), [db.as_str()], "{db_only}");
    let (all, _) = run_ctl_in(dir.path(), ["roll", "--all", "--output", "json"]);
    all.assert_success();
    assert_eq!(json(&all)["summary"]["ok"], 2, "{all}");
}

#[test]
fn each_failing_source_is_named_and_fails_the_run() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let agent = agent_named(&pki, "ok", &[]);
    // The static node again: the same address as written, the same server name.
    let address = format!("localhost:{}", agent.mtls_addr().port());
    let good = format!(r#"{{"targets": ["{address}"]}}"#);
    let error500 = SdServer::http(SdReply {
        status: 500,
        ..SdReply::json("[]")
    });
    let bad_json = SdServer::http(SdReply::json("[{\"targets\": "));
    let wrong_type = SdServer::http(SdReply {
        content_type: "text/html".into(),
        ..SdReply::json("[]")
    });
    let malformed = SdServer::http(SdReply::json(format!(
        r#"[{good}, {{"targets": ["nope"]}}]"#
    )));
    let empty_dns = Dnsmasq::spawn("fleet.example", &[], &[]);
    // A DNS server that never answers: a bound UDP socket nobody reads.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let cases: [(String, String); 7] = [
        (
            format!("kind = \"http_sd\"\nurl = \"{}\"", error500.url(false)),
            format!(
                "discovery: http_sd:{}: HTTP status 500 Internal Server Error",
                error500.url(false)
            ),
        ),
        (
            format!("kind = \"http_sd\"\nurl = \"{}\"", bad_json.url(false)),
            format!("discovery: http_sd:{}: not JSON: ", bad_json.url(false)),
        ),
        (
            format!("kind = \"http_sd\"\nurl = \"{}\"", wrong_type.url(false)),
            format!(
                "discovery: http_sd:{}: Content-Type \"text/html\" (expected application/json",
                wrong_type.url(false)
            ),
        ),
        (
            format!("kind = \"http_sd\"\nurl = \"{}\"", malformed.url(false)),
            format!(
                "discovery: http_sd:{}: entry 1: targets[0]: \"nope\": missing port",
                malformed.url(false)
            ),
        ),
        (
            format!(
                "kind = \"dns_srv\"\nname = \"{SRV_NAME}\"\nserver = \"{}\"",
                empty_dns.addr
            ),
            format!(
                "discovery: dns_srv:{SRV_NAME}: DNS server {} has no SRV records for {SRV_NAME}",
                empty_dns.addr
            ),
        ),
        (
            format!(
                "kind = \"dns_srv\"\nname = \"{SRV_NAME}\"\nserver = \"{silent_addr}\"\ntimeout = \"1s\""
            ),
            format!("discovery: dns_srv:{SRV_NAME}: "),
        ),
        (
            "kind = \"file_sd\"\npath = \"missing.json\"".to_owned(),
            "discovery: file_sd:missing.json: ".to_owned(),
        ),
    ];
    let discovery: String = (cases.iter())
        .map(|(entry, _)| format!("[[discovery]]\n{entry}\n\n"))
        .collect();
    let fleet = FleetFile::new(&pki)
        .timeout("2s")
        .node("static-ok", &address);
    write_fleet(dir.path(), &fleet, &discovery);

    // Without the flag: every failure named, nothing contacted, exit 1.
    let start = Instant::now();
    let (refused, _) = run_ctl_in(dir.path(), ["roll", "--all"]);
    refused.assert_code(1);
    for (_, expected) in &cases {
        refused.assert_stderr_contains(expected);
    }
    refused.assert_stderr_contains(
        "7 of 7 discovery sources failed: no node was contacted (fix the sources; roll, health and nodes take --allow-partial-discovery",
    );
    assert!(refused.stdout.is_empty(), "{refused}");
    // Sources run at once: the silent DNS server costs one timeout, not more.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    // nodes lists what was found (the static node and the malformed source's
    // good entry, the same node: merged) and still exits 1.
    let (listed, _) = run_ctl_in(dir.path(), ["nodes", "--output", "json"]);
    listed.assert_code(1);
    let document = json(&listed);
    assert_eq!(names(&document), ["static-ok"], "{listed}");
    assert_eq!(
        node(&document, "static-ok")["source"],
        format!("static,http_sd:{}", malformed.url(false))
    );
    listed.assert_stderr_contains("entry 1: targets[0]: \"nope\": missing port");

    // With the flag: the run goes on over the nodes found; failures still named.
    let (partial, _) = run_ctl_in(
        dir.path(),
        [
            "roll",
            "--all",
            "--allow-partial-discovery",
            "--output",
            "json",
        ],
    );
    partial.assert_success();
    assert_eq!(json(&partial)["summary"]["ok"], 1, "{partial}");
    for (_, expected) in &cases {
        partial.assert_stderr_contains(expected);
    }
    partial.assert_stderr_contains("(going on: --allow-partial-discovery)");
    drop(silent);
}

#[test]
fn bad_discovery_entries_are_config_errors() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    write_fleet(
        dir.path(),
        &FleetFile::new(&pki),
        "[[discovery]]\nkind = \"consul\"\n\n\
         [[discovery]]\nkind = \"dns_srv\"\nurl = \"http://x/\"\n\n\
         [[discovery]]\nkind = \"http_sd\"\nurl = \"https://sd.example/\"\n",
    );
    let (run, _) = run_ctl_in(dir.path(), ["nodes"]);
    run.assert_code(2);
    for expected in [
        "discovery[0].kind: \"consul\" is not a kind of discovery (use \"dns_srv\", \"http_sd\" or \"file_sd\")",
        "discovery[1].url: does not apply to kind = \"dns_srv\"",
        "discovery[1].name: missing: kind = \"dns_srv\" needs name",
        "discovery[2].ca: missing: an https url needs the CA bundle",
    ] {
        run.assert_stderr_contains(expected);
    }
}

// === --output jsonl ===

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = (value.as_object().expect("an object").keys())
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn jsonl_lines_arrive_as_nodes_finish() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let agent = agent_named(&pki, "fast", &[]);
    let silent = SilentPeer::bind();
    let timeout = Duration::from_secs(3);
    FleetFile::new(&pki)
        .timeout("3s")
        .node("fast", agent.mtls_addr())
        .node("slow", silent.addr)
        .write(&dir.path().join("fleet.toml"));

    let start = Instant::now();
    let mut child = spawn_ctl(dir.path(), &["roll", "--all", "--output", "jsonl"]);
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read the first line");
    let first_at = start.elapsed();
    assert!(
        child.try_wait().expect("try_wait").is_none() && first_at < timeout,
        "the first line came at {first_at:?}, not before the slow node's deadline: {first}"
    );
    let rest: Vec<String> = stdout.lines().map(|line| line.expect("a line")).collect();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(1), "a node failed");

    let first: Value = serde_json::from_str(&first).expect("the first line is JSON");
    assert_eq!(
        keys(&first),
        [
            "address",
            "command",
            "error",
            "latency_ms",
            "name",
            "ok",
            "schema_version",
            "server_name",
            "source",
            "type",
            "values"
        ]
    );
    assert_eq!(first["schema_version"], 1);
    assert_eq!(first["type"], "node");
    assert_eq!(first["command"], "roll");
    assert_eq!(first["name"], "fast");
    assert_eq!(first["ok"], true);
    assert_eq!(first["source"], "static");
    assert_eq!(first["server_name"], "localhost");

    assert_eq!(rest.len(), 2, "{rest:?}");
    let slow: Value = serde_json::from_str(&rest[0]).expect("JSON");
    assert_eq!(slow["name"], "slow");
    assert_eq!(slow["error"]["kind"], "timeout");
    let summary: Value = serde_json::from_str(&rest[1]).expect("JSON");
    assert_eq!(summary["schema_version"], 1);
    assert_eq!(summary["type"], "summary");
    assert_eq!(
        (
            summary["nodes"].clone(),
            summary["ok"].clone(),
            summary["failed"].clone()
        ),
        (2.into(), 1.into(), 1.into()),
        "{summary}"
    );
}

#[test]
fn health_and_nodes_write_jsonl_too() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let agent = agent_named(&pki, "one", &[]);
    FleetFile::new(&pki)
        .node_with("one", agent.mtls_addr(), &[("tier", "web")])
        .write(&dir.path().join("fleet.toml"));
    for (command, node_keys) in [("health", 15_usize), ("nodes", 8)] {
        let (run, _) = run_ctl_in(dir.path(), [command, "--output", "jsonl"]);
        run.assert_success();
        let lines: Vec<Value> = (run.stdout.lines())
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{run}");
        assert_eq!(lines[0]["type"], "node", "{run}");
        assert_eq!(lines[0]["schema_version"], 1);
        assert_eq!(keys(&lines[0]).len(), node_keys, "{:?}", keys(&lines[0]));
        assert_eq!(lines[1]["type"], "summary");
        assert_eq!(lines[1]["nodes"], 1, "{run}");
    }
}
