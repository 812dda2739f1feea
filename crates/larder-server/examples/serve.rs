//! `larder serve` without the CLI: the same flags and environment variables (`ServeArgs`), for
//! `bench/server.sh` when the `larder` binary at hand has no `serve` command.
//!
//! `cargo run --release -p larder-server --example serve -- --store memory://`

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: larder_server::ServeArgs,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let config = larder_server::Config::resolve(&cli.args)?;
    larder_server::serve(config).await?;
    Ok(())
}
