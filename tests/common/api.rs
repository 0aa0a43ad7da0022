//! The control plane's API alone (no dataplane, no root), served from a
//! thread of this test process on a loopback port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use microseg_control::api::{ApiState, Tokens};
use microseg_control::engine::{PolicyEngine, SwapObserver};
use microseg_control::metrics::Metrics;
use microseg_control::store::Store;

/// The admin token the served API accepts.
pub const TOKEN: &str = "cli-test-token-0123456789";

/// Serves the API over a store in `state_dir`; the server lives as long as
/// the test process. Returns its address.
pub fn serve(state_dir: &Path) -> SocketAddr {
    serve_with(state_dir, None)
}

/// As `serve`, over TLS with a PEM certificate chain and key if given.
pub fn serve_with(state_dir: &Path, tls: Option<(&Path, &Path)>) -> SocketAddr {
    let acceptor = tls.map(|(cert, key)| {
        microseg_control::api::tls::acceptor(cert, key).expect("certificate and key load")
    });
    let store = Store::open(state_dir).expect("store");
    let metrics = Arc::new(Metrics::new());
    let observer: Arc<dyn SwapObserver> = Arc::clone(&metrics) as Arc<dyn SwapObserver>;
    let engine = PolicyEngine::restore(store, None, Some(observer))
        .expect("restore")
        .engine;
    metrics.set_generation(engine.generation(), 0);
    let state = Arc::new(ApiState {
        engine: Some(Arc::new(engine)),
        appliance: None,
        tokens: Tokens::parse(&format!("admin cli {TOKEN}\n"), "test").expect("tokens"),
        anonymous_reads: false,
        body_limit: microseg_control::api::DEFAULT_BODY_LIMIT,
        metrics,
        visibility: None,
    });
    serve_state(state, acceptor, std::future::pending()).0
}

/// Serves `state` (over TLS with `acceptor`) on a loopback port from a
/// thread of its own, until `stop` resolves: its address and thread.
pub fn serve_state(
    state: Arc<ApiState>,
    acceptor: Option<microseg_control::api::tls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = match acceptor {
                Some(acceptor) => {
                    let tls = microseg_control::api::tls::TlsListener::new(listener, acceptor)
                        .expect("TLS listener");
                    microseg_control::api::serve(tls, state, stop).await
                }
                None => microseg_control::api::serve(listener, state, stop).await,
            };
        });
    });
    (addr, server)
}
