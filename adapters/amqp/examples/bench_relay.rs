//! Runs the relay benchmark of the `paystream` binary (`paystream bench relay`) on its own:
//! `cargo run --release -p paystream-amqp --example bench_relay -- --database-url postgres://…`.

#[path = "../../../src/bench_relay.rs"]
mod bench_relay;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: bench_relay::RelayBenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bench_relay::run(Cli::parse().args).await
}
