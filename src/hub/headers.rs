//! A checkpoint on the hub listed without its weights, as the hub's own file viewer does.
//!
//! `config.json` and, for a sharded checkpoint, `model.safetensors.index.json` are downloaded
//! into the cache like any file. Of each safetensors file only the header is read, with two
//! HTTP range requests: `bytes=0-7` (the header's length `n`, a little-endian u64; the answer's
//! `Content-Range` gives the file's size), then `bytes=8-<8+n-1>` (the JSON header). A length
//! over [`crate::hf::MAX_HEADER_BYTES`] is refused before it is requested. The header goes
//! through the same parser as a local file's ([`crate::hf::parse_header`]).

use std::collections::HashSet;
use std::io::Read;

use super::{list_repo, select, FetchEvent, HubError, HubOptions, RepoId, INDEX_FILE, SINGLE_FILE};
use crate::hf::{header_len, parse_header, Header, HfError, HEADER_LEN_BYTES, MAX_HEADER_BYTES};

/// The configuration every checkpoint has.
const CONFIG_FILE: &str = "config.json";

/// A checkpoint on the hub: its config and the header of each safetensors file.
#[derive(Debug, Clone)]
pub struct RemoteCheckpoint {
    /// The repository as asked for.
    pub repo: RepoId,
    /// The commit the revision resolved to.
    pub commit: String,
    /// `config.json`, parsed but not interpreted.
    pub config: serde_json::Value,
    /// The safetensors files: `model.safetensors`, or the shards by name, as
    /// [`crate::hf::Checkpoint`] orders a local folder's.
    pub files: Vec<RemoteFile>,
}

/// One safetensors file on the hub, known by its header.
#[derive(Debug, Clone)]
pub struct RemoteFile {
    /// Its name in the repository.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its header.
    pub header: Header,
}

/// Reads `repo`'s config and safetensors headers from the hub without downloading weights:
/// config.json and the shard index land in the cache (with `progress` events), the headers are
/// read by range requests. Fails as [`super::fetch_checkpoint`] does for a missing, gated or
/// pickle-only repository.
pub fn fetch_headers(
    repo: &RepoId,
    options: &HubOptions,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<RemoteCheckpoint, HubError> {
    let listing = list_repo(repo, options)?;
    // The same refusals as a conversion: no config, pickle-only weights, no safetensors.
    let selected = select::select_files(repo, &listing.siblings)?;
    listing.download(repo, options, CONFIG_FILE, progress)?;
    let config_path = listing.snapshot.join(CONFIG_FILE);
    let config = crate::hf::read_json(&config_path)?;
    if !config.is_object() {
        return Err(HfError::BadField { path: config_path, expected: "a JSON object" }.into());
    }
    let sharded = selected.iter().any(|f| f == INDEX_FILE);
    let names = if sharded {
        listing.download(repo, options, INDEX_FILE, progress)?;
        let mut shards = select::shards_of_index(repo, &listing.snapshot.join(INDEX_FILE), &listing.siblings)?;
        shards.sort();
        shards
    } else {
        vec![SINGLE_FILE.to_owned()]
    };
    let reader = RangeReader::new(repo, options, &listing.commit);
    let files = names
        .into_iter()
        .map(|name| {
            let (size, header) = reader.header(&name)?;
            Ok(RemoteFile { name, size, header })
        })
        .collect::<Result<Vec<_>, HubError>>()?;
    if sharded {
        check_index(&listing.snapshot.join(INDEX_FILE), &files)?;
    }
    listing.pin_revision(repo, options)?;
    Ok(RemoteCheckpoint { repo: repo.clone(), commit: listing.commit, config, files })
}

/// Every tensor the index routes to a shard must be in that shard's header, as
/// [`crate::hf::Checkpoint::open`] checks for a local folder.
fn check_index(index: &std::path::Path, files: &[RemoteFile]) -> Result<(), HubError> {
    let json = crate::hf::read_json(index)?;
    let map = json.get("weight_map").and_then(|m| m.as_object());
    let present: HashSet<(&str, &str)> =
        files.iter().flat_map(|f| f.header.tensors.iter().map(|t| (f.name.as_str(), t.name.as_str()))).collect();
    for (tensor, shard) in map.into_iter().flatten() {
        // `shards_of_index` has checked that every shard is a string.
        let shard = shard.as_str().unwrap_or_default();
        if !present.contains(&(shard, tensor.as_str())) {
            let (tensor, shard) = (tensor.clone(), shard.to_owned());
            return Err(HfError::TensorNotInShard { index: index.to_owned(), tensor, shard }.into());
        }
    }
    Ok(())
}

/// Range requests for the files of one repository at one commit.
struct RangeReader<'a> {
    agent: ureq::Agent,
    repo: &'a RepoId,
    options: &'a HubOptions,
    commit: &'a str,
}

impl<'a> RangeReader<'a> {
    fn new(repo: &'a RepoId, options: &'a HubOptions, commit: &'a str) -> RangeReader<'a> {
        // Redirects to the hub's storage are followed; the token goes to the hub's host only,
        // as hf-hub sends it.
        let agent =
            ureq::builder().try_proxy_from_env(true).redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost).build();
        RangeReader { agent, repo, options, commit }
    }

    /// The size and parsed header of the safetensors file `file`.
    fn header(&self, file: &str) -> Result<(u64, Header), HubError> {
        let (prefix, size) = self.range(file, 0, HEADER_LEN_BYTES as u64)?;
        let prefix: [u8; HEADER_LEN_BYTES] = prefix.try_into().expect("range() returns exactly the bytes asked for");
        let bad = |source| HubError::Header { repo: self.repo.clone(), file: file.to_owned(), source };
        let n = header_len(prefix).map_err(|_| HubError::HeaderTooLarge {
            repo: self.repo.clone(),
            file: file.to_owned(),
            found: u64::from_le_bytes(prefix),
            max: MAX_HEADER_BYTES,
        })?;
        let fits = (HEADER_LEN_BYTES as u64).checked_add(n).is_some_and(|end| end <= size);
        if n == 0 || !fits {
            return Err(bad(safetensors::SafeTensorError::InvalidHeaderLength));
        }
        let (json, _) = self.range(file, HEADER_LEN_BYTES as u64, n)?;
        let header = parse_header(&json, size).map_err(bad)?;
        Ok((size, header))
    }

    /// `len` bytes of `file` from `start` (len > 0), and the file's size from `Content-Range`.
    fn range(&self, file: &str, start: u64, len: u64) -> Result<(Vec<u8>, u64), HubError> {
        let end = start + len - 1;
        let bad = |found: String| HubError::BadRange {
            repo: self.repo.clone(),
            file: file.to_owned(),
            first: start,
            last: end,
            found,
        };
        let url = format!("{}/{}/resolve/{}/{file}", self.options.endpoint, self.repo.id(), self.commit);
        let mut request = self
            .agent
            .get(&url)
            .set("Range", &format!("bytes={start}-{end}"))
            .set("User-Agent", concat!("gguftune/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.options.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let response = request.call().map_err(|e| HubError::from_ureq(e, self.repo, self.options, Some(file)))?;
        if response.status() != 206 {
            return Err(bad(format!("status {} instead of 206 Partial Content", response.status())));
        }
        let content_range = response.header("Content-Range").unwrap_or_default().to_owned();
        let size = parse_content_range(&content_range)
            .filter(|&(first, last, _)| (first, last) == (start, end))
            .map(|(_, _, size)| size)
            .ok_or_else(|| bad(format!("Content-Range '{content_range}'")))?;
        let mut bytes = Vec::new();
        response.into_reader().take(len).read_to_end(&mut bytes).map_err(|e| HubError::Network {
            repo: self.repo.clone(),
            file: Some(file.to_owned()),
            message: e.to_string(),
        })?;
        if bytes.len() as u64 != len {
            return Err(bad(format!("{} bytes", bytes.len())));
        }
        Ok((bytes, size))
    }
}

/// `bytes <first>-<last>/<size>` as numbers.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (span, size) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, size.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(parse_content_range("bytes 0-7/1234"), Some((0, 7, 1234)));
        assert_eq!(parse_content_range("bytes 8-99/*"), None);
        assert_eq!(parse_content_range("bytes */1234"), None);
        assert_eq!(parse_content_range(""), None);
    }
}
