//! `dice-reference`: the benchmark suite's ceiling. It serves the same
//! `api.DiceService/RollDie` from the same proto (`dice_proto`) with bare
//! tonic and nothing else: no logging, metrics, limits, timeouts,
//! authorization, reload or health. Over h2c it is tonic's own `TcpIncoming`;
//! over TLS it is the least a comparable mTLS server needs: an accept loop,
//! each handshake in its own task (tokio-rustls, ring, TLS 1.2 and 1.3, ALPN
//! h2, client certificates verified against a CA, as the agent does), and
//! finished streams handed to tonic's `serve_with_incoming`. Those pieces
//! live in `dice_proto::testing`, which the harness's own checks share.
//!
//! ```text
//! dice-reference --h2c ADDR --tls ADDR --cert PEM --key PEM --client-ca PEM [--ready-file PATH]
//! ```
//!
//! The ready file has the agent's format (`NAME MODE ADDRESS`): `h2c h2c ADDR`
//! and `mtls mtls ADDR`, written once both listeners are bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use dice_proto::api::dice_service_server::DiceServiceServer;
use dice_proto::testing::{Dice, TLS_VERSIONS, accept_tls, server_config};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

struct Args {
    h2c: SocketAddr,
    tls: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    ready_file: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut h2c, mut tls, mut cert, mut key, mut client_ca, mut ready_file) =
        (None, None, None, None, None, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag}: missing value"))?;
        let addr = || {
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--h2c" => h2c = Some(addr()?),
            "--tls" => tls = Some(addr()?),
            "--cert" => cert = Some(PathBuf::from(value)),
            "--key" => key = Some(PathBuf::from(value)),
            "--client-ca" => client_ca = Some(PathBuf::from(value)),
            "--ready-file" => ready_file = Some(PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let need = |name: &str| format!("{name} is required");
    Ok(Args {
        h2c: h2c.ok_or_else(|| need("--h2c"))?,
        tls: tls.ok_or_else(|| need("--tls"))?,
        cert: cert.ok_or_else(|| need("--cert"))?,
        key: key.ok_or_else(|| need("--key"))?,
        client_ca: client_ca.ok_or_else(|| need("--client-ca"))?,
        ready_file,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("dice-reference: {error}");
            return ExitCode::from(2);
        }
    };
    let config = match server_config(&args.cert, &args.key, &args.client_ca, TLS_VERSIONS) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("dice-reference: {error}");
            return ExitCode::from(2);
        }
    };
    let (h2c, tls) = match (
        TcpListener::bind(args.h2c).await,
        TcpListener::bind(args.tls).await,
    ) {
        (Ok(h2c), Ok(tls)) => (h2c, tls),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("dice-reference: cannot bind: {error}");
            return ExitCode::from(1);
        }
    };
    let (Ok(h2c_addr), Ok(tls_addr)) = (h2c.local_addr(), tls.local_addr()) else {
        eprintln!("dice-reference: cannot read the bound addresses");
        return ExitCode::from(1);
    };

    let plain = Server::builder()
        .add_service(DiceServiceServer::new(Dice::Fair))
        .serve_with_incoming(TcpIncoming::from(h2c).with_nodelay(Some(true)));
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(accept_tls(tls, TlsAcceptor::from(config), sender));
    let secure = Server::builder()
        .add_service(DiceServiceServer::new(Dice::Fair))
        .serve_with_incoming(ReceiverStream::new(receiver));
    let plain = tokio::spawn(plain);
    let secure = tokio::spawn(secure);

    if let Some(path) = &args.ready_file {
        let text = format!("h2c h2c {h2c_addr}\nmtls mtls {tls_addr}\n");
        let tmp = path.with_extension("tmp");
        if let Err(error) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            eprintln!("dice-reference: cannot write {}: {error}", path.display());
            return ExitCode::from(1);
        }
    }
    let (plain, secure) = tokio::join!(plain, secure);
    if !matches!((plain, secure), (Ok(Ok(())), Ok(Ok(())))) {
        eprintln!("dice-reference: a server stopped with an error");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
