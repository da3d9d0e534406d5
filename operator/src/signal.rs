//! Shutdown on SIGINT or SIGTERM.

/// Resolves on SIGINT or SIGTERM. If a handler cannot be installed the
/// default disposition (terminate) stays, so waiting forever is right.
pub(crate) async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        Ok(()) = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
