//! The Django example (`examples/django`), served by Django's own server from
//! the test venv, rolling through the Python client against real agents, and
//! loaded in Debian's headless Chromium. Chromium is slow to start: two loads
//! in all, one die face and one error page.
//!
//! Needs the test venv (`./scripts/setup-test-env.sh`) and Chromium
//! (`apt-get install chromium`); missing either fails the test.

use dice_tests::chromium::{attribute, dump_dom, element_tag, element_text};
use dice_tests::django::DjangoSite;
use dice_tests::nginx::Nginx;
use dice_tests::rpc_log::{assert_no_rolls_before, await_rolls};
use dice_tests::service::free_port;
use dice_tests::{Agent, AgentConfig, Ctl, LeafSpec, fresh_pki};

/// The Unicode die faces, ⚀ (1) to ⚅ (6).
const FACES: [&str; 6] = ["⚀", "⚁", "⚂", "⚃", "⚄", "⚅"];

#[test]
fn django_page_shows_a_die_face_rolled_by_a_real_agent() {
    let (_dir, pki) = fresh_pki();
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let site = DjangoSite::spawn(agent.mtls_addr(), pki.ca_cert(), pki.client());

    let page = site.get("/");
    assert_eq!(page.status, 200, "{}\n{}", page.body, site.dump());

    let dom = dump_dom(&site.url());
    let die = element_tag(&dom, "die")
        .unwrap_or_else(|| panic!("no id=\"die\" element in the page\n{dom}"));
    let value: usize = attribute(die, "data-value")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("the die has no numeric data-value: {die}"));
    assert!((1..=6).contains(&value), "{die}");
    assert_eq!(
        element_text(&dom, "die"),
        Some(FACES[value - 1]),
        "the die shows the face for {value}\n{dom}"
    );

    // Both page loads rolled on the agent, through grpcio.
    let [lines] = await_rolls([&agent], 2);
    assert_eq!(lines.len(), 2, "{}", agent.dump());
    assert!(lines.iter().all(|line| line.line.contains("grpc-python/")));
}

#[test]
fn django_error_pages_when_the_node_is_down_or_refuses_the_certificate() {
    let (_dir, pki) = fresh_pki();
    let stranger = pki.unrelated("other");

    // A node that is down: nothing listens on a port that was just free.
    let down = DjangoSite::spawn(
        format!("127.0.0.1:{}", free_port()),
        pki.ca_cert(),
        pki.client(),
    );
    let page = down.get("/");
    assert_eq!(page.status, 503, "{}\n{}", page.body, down.dump());
    let dom = dump_dom(&down.url());
    let error = element_tag(&dom, "error")
        .unwrap_or_else(|| panic!("no id=\"error\" element in the page\n{dom}"));
    assert_eq!(
        attribute(error, "data-kind"),
        Some("unavailable"),
        "{error}"
    );
    assert_eq!(
        attribute(error, "data-code"),
        Some("UNAVAILABLE"),
        "{error}"
    );
    assert!(dom.contains("The dice node is down"), "{dom}");
    assert!(element_tag(&dom, "die").is_none(), "{dom}");

    // An agent that refuses this site's certificate (from another CA).
    let agent = Agent::spawn(&AgentConfig::standard(&pki));
    let refused = DjangoSite::spawn(agent.mtls_addr(), pki.ca_cert(), stranger.client());
    let page = refused.get("/");
    assert_eq!(page.status, 502, "{}\n{}", page.body, refused.dump());
    assert!(page.body.contains("data-kind=\"tls\""), "{}", page.body);
    assert!(
        page.body
            .contains("refused this site&#x27;s client certificate"),
        "{}",
        page.body
    );

    // nginx refusing it says the same, with nginx's UNAUTHENTICATED.
    let nginx = Nginx::spawn(&pki, [agent.h2c_addr(), agent.h2c_addr()]);
    let behind_nginx = DjangoSite::spawn(nginx.addr(), pki.ca_cert(), stranger.client());
    let page = behind_nginx.get("/");
    assert_eq!(page.status, 502, "{}\n{}", page.body, behind_nginx.dump());
    assert!(page.body.contains("data-kind=\"tls\""), "{}", page.body);
    assert!(
        page.body.contains("data-code=\"UNAUTHENTICATED\""),
        "{}",
        page.body
    );
    let marker = pki.issue(&LeafSpec::client("log-marker"));
    assert_no_rolls_before(&agent, &marker.summary.subject, || {
        Ctl::roll(agent.mtls_addr(), pki.ca_cert(), &marker.cert, &marker.key).assert_rolled();
    });
}
