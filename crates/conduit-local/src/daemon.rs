//! The supervisor's process: what `conduit local daemon` (started detached by `up`) does
//! before and after supervising. It writes its pid file, creates the node namespace and
//! moves into it, makes the runtime's identity material, and runs the
//! [`Supervisor`](crate::supervisor::Supervisor) on an async runtime until `SIGTERM`;
//! its pid file goes last. Knows nothing of what the supervisor does with pods.

use crate::{
    identity::LocalIdentity, layout::Layout, net, prometheus::Metrics, state,
    supervisor::Supervisor,
};
use anyhow::Context as _;

/// Runs the supervisor until `SIGTERM`; called in the detached daemon process.
pub fn run(layout: Layout) -> anyhow::Result<()> {
    std::fs::create_dir_all(layout.logs())?;
    std::fs::create_dir_all(layout.etc())?;
    std::fs::write(layout.daemon_pid(), std::process::id().to_string())?;
    let node = net::create_node(&layout).context("creating the node namespace and its bridge")?;
    // Every thread of the supervisor is born in the node namespace: probes and the
    // control plane reach pods over the bridge.
    node.enter().context("entering the node namespace")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let identity =
        LocalIdentity::create(&layout).context("making the runtime's trust anchor and issuer")?;
    let metrics = state::read_json::<Metrics>(&layout.metrics())
        .context("reading the metrics' source `up` chose")?
        .unwrap_or_default();
    let result = runtime.block_on(Supervisor::new(layout.clone(), node, identity, metrics).run());
    drop(runtime);
    // Last, so that whoever waits for the pid file to go knows everything is gone.
    let _ = std::fs::remove_file(layout.daemon_pid());
    result
}
