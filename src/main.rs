#![forbid(unsafe_code)]

use clap::Parser;
use image_reflector::cli::{Cli, run};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = image_reflector::telemetry::init(&cli.log) {
        eprintln!("image-reflector: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("image-reflector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
