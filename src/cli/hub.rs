//! Model arguments that name a hub repository: fetched into the Hugging Face cache, with a
//! progress bar per file, before the command runs on the snapshot folder.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::output::byte_progress;
use gguftune::hub::{self, FetchEvent, HubOptions, RepoId};

/// The local folder `input` names: `input` itself when it exists or is not shaped like a
/// repository id (`owner/name[@revision]`), else the repository's snapshot in the hub cache,
/// downloaded unless `offline`.
pub fn resolve_model_dir(input: &str, offline: bool) -> anyhow::Result<PathBuf> {
    let path = Path::new(input);
    if path.exists() {
        return Ok(path.to_owned());
    }
    let Ok(repo) = RepoId::parse(input) else {
        return Ok(path.to_owned());
    };
    let mut options = HubOptions::from_env()?;
    options.offline |= offline;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut on_event = |event: FetchEvent<'_>| match event {
        FetchEvent::Start { file, total_bytes } => {
            if let Some(old) = bar.take() {
                old.finish_and_clear();
            }
            bar = Some(byte_progress(total_bytes, file));
        }
        FetchEvent::Progress { done_bytes, .. } => {
            if let Some(bar) = &bar {
                bar.set_position(done_bytes);
            }
        }
        FetchEvent::Finish { .. } => {
            if let Some(bar) = bar.take() {
                bar.finish_and_clear();
            }
        }
    };
    let snapshot = hub::fetch_checkpoint(&repo, &options, &mut on_event).with_context(|| {
        format!("fetching {repo} from {}", if options.offline { "the hub cache" } else { &options.endpoint })
    })?;
    eprintln!("{repo}: {}", snapshot.display());
    Ok(snapshot)
}
