//! `mobilenet fetch`: download a published checkpoint into the cache.

use std::path::PathBuf;

use mobilenet::Result;
use mobilenet::fetch::{self, FetchOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model's name, e.g. mobilenet_v1_1.0_224 or mobilenet_v1_0.5_160_quant.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// Cache folder (default: $MOBILENET_CACHE, $XDG_CACHE_HOME/mobilenet or ~/.cache/mobilenet).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// List the models that can be fetched.
    #[arg(long)]
    list: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if args.list {
        for entry in fetch::catalog() {
            println!("{}", entry.name);
        }
        return Ok(());
    }
    let Some(name) = &args.name else {
        return Ok(());
    };
    let entry = fetch::find(name)?;
    let cache = match &args.cache {
        Some(dir) => dir.clone(),
        None => fetch::default_cache_dir()?,
    };
    let options = FetchOptions {
        progress: true,
        ..FetchOptions::default()
    };
    let path = fetch::fetch(entry, &cache, &options)?;
    println!("{}", path.display());
    Ok(())
}
