//! `image-reflector crds`: print the CRDs, or write one file per CRD into a directory.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `crds`.
#[derive(clap::Args, Debug)]
pub struct CrdsArgs {
    /// Write `imagerepositories.yaml` and `imagepolicies.yaml` into this directory instead
    /// of printing both to stdout.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// Prints or writes the CRDs.
pub fn run(args: CrdsArgs) -> anyhow::Result<ExitCode> {
    match args.output_dir {
        None => print!("{}", crate::api::crds_yaml()?),
        Some(dir) => {
            for (file, yaml) in crate::api::crd::crd_files()? {
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
