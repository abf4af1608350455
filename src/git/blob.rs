//! Copying a blob of the cache into a writer without holding a big one in memory.
//!
//! libgit2 reads an object whole, and has no stream for a packed object: writing a 200 MB file
//! held all of it in memory, plus the pack pages it was read through (354 MB peak RSS). A blob
//! over [`STREAM_ABOVE`] is therefore streamed:
//! - from its pack when it is stored there whole (the pack index and entry header are read with
//!   gitoxide's `gix-pack`; the zlib stream with `flate2`, through `read`, not a map);
//! - from its loose file, inflated through a buffer (libgit2's loose stream maps the file);
//! - read whole only when it is a delta in a pack (rebuilding one needs its base anyway).
//!
//! Invariant: a streamed blob is hashed as it is copied, and a copy whose bytes do not hash to
//! the blob's id (or have another length) is an error, as libgit2's own reads are.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context};

use super::{files_with_extension, Cache, Oid};

/// Blobs at most this big are read whole (one libgit2 call, the common case); bigger ones are
/// streamed.
pub const STREAM_ABOVE: usize = 4 * 1024 * 1024;

/// The buffer a streamed blob passes through.
const CHUNK: usize = 64 * 1024;

impl Cache {
    /// Write blob `id` to `out`; returns its size. See the module docs for how much of it is
    /// held in memory.
    pub fn copy_blob(&self, id: Oid, out: &mut impl Write) -> anyhow::Result<u64> {
        copy_blob(&self.repo, id, out)
    }
}

/// [`Cache::copy_blob`] from any repository (the same-host copier reads its origin so).
pub(super) fn copy_blob(
    repo: &git2::Repository,
    id: Oid,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let (size, kind) = repo
        .odb()?
        .read_header(id)
        .with_context(|| format!("reading blob {id}"))?;
    if kind != git2::ObjectType::Blob {
        bail!("object {id} is a {kind}, not a blob");
    }
    copy_blob_of_size(repo, id, size, out)
}

/// [`copy_blob`] when the blob's `size` is known (its header was read).
pub(super) fn copy_blob_of_size(
    repo: &git2::Repository,
    id: Oid,
    size: usize,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    if size > STREAM_ABOVE {
        if let Some(copied) = stream_packed(repo, id, size as u64, out)? {
            return Ok(copied);
        }
        if let Some(copied) = stream_loose(repo, id, size as u64, out)? {
            return Ok(copied);
        }
    }
    let blob = repo
        .find_blob(id)
        .with_context(|| format!("reading blob {id}"))?;
    out.write_all(blob.content())?;
    Ok(blob.content().len() as u64)
}

/// [`copy_blob`] from the pack that stores `id` whole; `None` when no pack has it or the one
/// that has it stores it as a delta.
fn stream_packed(
    repo: &git2::Repository,
    id: Oid,
    size: u64,
    out: &mut impl Write,
) -> anyhow::Result<Option<u64>> {
    let wanted =
        gix_hash::ObjectId::try_from(id.as_bytes()).map_err(|e| anyhow!("object id {id}: {e}"))?;
    for index_path in files_with_extension(&repo.path().join("objects/pack"), "idx")? {
        let index = gix_pack::index::File::at(&index_path, gix_hash::Kind::Sha1)
            .map_err(|e| anyhow!("reading pack index {}: {e}", index_path.display()))?;
        let Some(at) = index.lookup(wanted) else {
            continue;
        };
        let pack_path = index_path.with_extension("pack");
        let entry = gix_pack::data::File::at(&pack_path, gix_hash::Kind::Sha1)
            .and_then(|pack| pack.entry(index.pack_offset_at_index(at)))
            .map_err(|e| anyhow!("reading pack {}: {e}", pack_path.display()))?;
        if entry.header != gix_pack::data::entry::Header::Blob {
            return Ok(None);
        }
        let copied = stream_entry(&pack_path, entry.data_offset, id, size, out)
            .with_context(|| format!("reading blob {id} from {}", pack_path.display()))?;
        return Ok(Some(copied));
    }
    Ok(None)
}

/// [`copy_blob`] from the loose file of `id`; `None` when there is none (it is in a pack, or
/// behind an alternate). Not libgit2's loose stream: that maps the whole file into memory.
fn stream_loose(
    repo: &git2::Repository,
    id: Oid,
    size: u64,
    out: &mut impl Write,
) -> anyhow::Result<Option<u64>> {
    let hex = id.to_string();
    let path = repo.path().join("objects").join(&hex[..2]).join(&hex[2..]);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut inflated = flate2::bufread::ZlibDecoder::new(BufReader::with_capacity(CHUNK, file));
    // A loose object is `blob <size>`, a NUL and the bytes, deflated as one stream.
    let expected = format!("blob {size}\0");
    let mut header = vec![0; expected.len()];
    inflated
        .read_exact(&mut header)
        .with_context(|| format!("reading loose blob {id}"))?;
    if header != expected.as_bytes() {
        bail!("loose blob {id} is corrupt: its header is not {expected:?}");
    }
    copy_verified(inflated, id, size, out)
        .with_context(|| format!("reading loose blob {id}"))
        .map(Some)
}

/// Inflate the zlib stream at `data_offset` of the pack at `path` into `out`.
fn stream_entry(
    path: &Path,
    data_offset: u64,
    id: Oid,
    size: u64,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(data_offset))?;
    let inflated = flate2::bufread::ZlibDecoder::new(BufReader::with_capacity(CHUNK, file));
    copy_verified(inflated, id, size, out)
}

/// Copy `size` bytes of blob `id` from `from` to `out`, hashing them as git does (`blob <size>`,
/// a NUL, the bytes); fails when `from` holds more or fewer bytes or they hash to another id.
fn copy_verified(from: impl Read, id: Oid, size: u64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut hasher = gix_hash::hasher(gix_hash::Kind::Sha1);
    hasher.update(format!("blob {size}\0").as_bytes());
    // One byte past `size` is read so that a longer stream is seen.
    let mut from = from.take(size + 1);
    let mut buf = vec![0; CHUNK];
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        copied += n as u64;
    }
    if copied != size {
        bail!("blob {id} is corrupt: {copied} bytes where its header says {size}");
    }
    let got = hasher
        .try_finalize()
        .map_err(|e| anyhow!("hashing blob {id}: {e}"))?;
    if got.as_bytes() != id.as_bytes() {
        bail!("blob {id} is corrupt: its bytes hash to {got}");
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::test_support::{fetched, Origin, FILE};

    /// Bytes that do not compress (so the pack holds them as they are, and a size is real).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn blob_of(cache: &Cache, path: &str) -> Oid {
        let head = cache.repo().refname_to_id("refs/heads/main").unwrap();
        let tree = cache.repo().find_commit(head).unwrap().tree().unwrap();
        tree.get_path(Path::new(path)).unwrap().id()
    }

    /// An origin holding `files` on main, with its objects in one pack (as a server's are)
    /// when `packed`, loose otherwise (as libgit2 and `git push` leave a few); fetched.
    fn fetched_with(
        files: &[(&str, i32, &[u8])],
        packed: bool,
    ) -> (tempfile::TempDir, Cache, Origin) {
        let origin = Origin::new();
        origin.commit("refs/heads/main", files);
        if packed {
            origin.repack();
        }
        let (state, cache) = fetched(&origin, "refs/heads/main");
        (state, cache, origin)
    }

    fn packs(cache: &Cache) -> Vec<std::path::PathBuf> {
        files_with_extension(&cache.repo().path().join("objects/pack"), "pack").unwrap()
    }

    #[test]
    fn a_big_blob_is_streamed_from_its_pack_or_loose_file_and_a_small_one_read_whole() {
        let big = noise(STREAM_ABOVE + 12_345, 7);
        for packed in [true, false] {
            let files: &[(&str, i32, &[u8])] = &[("big.bin", FILE, &big), ("small", FILE, b"hi\n")];
            let (_state, cache, _origin) = fetched_with(files, packed);
            assert_eq!(packs(&cache).is_empty(), !packed);
            let mut out = Vec::new();
            let id = blob_of(&cache, "big.bin");
            assert_eq!(cache.copy_blob(id, &mut out).unwrap(), big.len() as u64);
            assert!(
                out == big,
                "the streamed copy differs from the blob (packed: {packed})"
            );
            // …and by the way the module promises: from the pack, or from the loose file.
            let mut again = Vec::new();
            let streamed = stream_packed(cache.repo(), id, big.len() as u64, &mut again).unwrap();
            assert_eq!(streamed.is_some(), packed);
            let loose = stream_loose(cache.repo(), id, big.len() as u64, &mut io::sink()).unwrap();
            assert_eq!(loose.is_some(), !packed);
            let mut small = Vec::new();
            cache
                .copy_blob(blob_of(&cache, "small"), &mut small)
                .unwrap();
            assert_eq!(small, b"hi\n");
        }
    }

    /// Flip one byte in the middle of `file` (for a file holding one big blob: the middle of
    /// its zlib stream).
    fn alter(file: &Path) {
        let mut bytes = std::fs::read(file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        let mut perms = std::fs::metadata(file).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(file, perms).unwrap();
        std::fs::write(file, bytes).unwrap();
    }

    #[test]
    fn a_big_blob_whose_stored_bytes_were_altered_is_refused_naming_it() {
        let big = noise(STREAM_ABOVE + 1, 9);
        for packed in [true, false] {
            let (_state, cache, _origin) = fetched_with(&[("big.bin", FILE, &big)], packed);
            let id = blob_of(&cache, "big.bin");
            let size = big.len() as u64;
            let err = if packed {
                let [pack] = &packs(&cache)[..] else {
                    panic!("expected one pack")
                };
                alter(pack);
                stream_packed(cache.repo(), id, size, &mut io::sink()).unwrap_err()
            } else {
                let hex = id.to_string();
                alter(
                    &cache
                        .repo()
                        .path()
                        .join("objects")
                        .join(&hex[..2])
                        .join(&hex[2..]),
                );
                stream_loose(cache.repo(), id, size, &mut io::sink()).unwrap_err()
            };
            assert!(format!("{err:#}").contains(&id.to_string()), "{err:#}");
            let err = cache.copy_blob(id, &mut io::sink()).unwrap_err();
            assert!(format!("{err:#}").contains(&id.to_string()), "{err:#}");
        }
    }
}
