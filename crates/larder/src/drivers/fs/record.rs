//! The object file: a fixed header, the metadata, then the body (layout in the
//! [module docs](super)), and the reads that decode it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::etag::ETag;
use crate::key::Key;
use crate::meta::Meta;
use crate::store::PutOptions;

use super::io_context;

const MAGIC: &[u8; 8] = b"LARDFS01";
/// The magic, the metadata's length and the body's offset.
pub(super) const FIXED_HEADER: usize = 20;
/// Longest encoded metadata (JSON bytes) an object file holds: a put whose metadata encodes to
/// more is refused before anything is written, and a header claiming more is corruption.
pub const MAX_META_LEN: usize = 16 << 20;
/// How much of a file a header read asks for in its first `read`: the fixed header and the
/// metadata of nearly every object. Larger metadata takes a second read.
pub(super) const HEADER_PROBE: usize = 4096;

/// Refuses, before the body is read, a put whose metadata would encode to more than
/// [`MAX_META_LEN`] bytes (measured on the version it would write, with the widest size).
pub(super) fn check_meta_fits(key: &Key, opts: &PutOptions) -> Result<()> {
    let widest = Meta::next_version(key, ETag::of(b""), u64::MAX, None, opts)?;
    encode_meta(&widest).map(drop)
}

/// The encoded metadata of `meta`, or `InvalidInput` when it is over [`MAX_META_LEN`].
pub(super) fn encode_meta(meta: &Meta) -> Result<Vec<u8>> {
    let encoded = meta.encode();
    if encoded.len() > MAX_META_LEN {
        return Err(Error::InvalidInput(format!(
            "fs store: the metadata of {} encodes to {} bytes, over the limit of {MAX_META_LEN} \
             (content type and user metadata together)",
            meta.key,
            encoded.len()
        )));
    }
    Ok(encoded.into_bytes())
}

/// The header of an object file: `encoded_meta` (from [`encode_meta`]) and the body's offset.
/// `extra` is capacity reserved for bytes the caller appends (the body, when inline).
pub(super) fn header_bytes(encoded_meta: &[u8], body_offset: u64, extra: usize) -> Vec<u8> {
    debug_assert!(encoded_meta.len() <= MAX_META_LEN);
    let mut h = Vec::with_capacity(FIXED_HEADER + encoded_meta.len() + extra);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(encoded_meta.len() as u32).to_le_bytes());
    h.extend_from_slice(&body_offset.to_le_bytes());
    h.extend_from_slice(encoded_meta);
    h
}

/// An object file opened for reading: its checked metadata, where its body starts, and the
/// first bytes of the file as read with the header (often the whole body of a small object).
/// Everything is read from this one descriptor, so a concurrent rename cannot mix versions.
pub(super) struct Record {
    file: File,
    pub(super) meta: Meta,
    body_offset: u64,
    head: Bytes,
}

impl Record {
    /// `len` bytes of the body from `start` (relative to the body): sliced from what the header
    /// read brought in when it covers them, else read (one seek and one read).
    pub(super) fn body(&mut self, start: u64, len: usize) -> Result<Bytes> {
        let at = self.body_offset + start;
        let end = at + len as u64;
        let in_head = self.head.len() as u64;
        if end <= in_head {
            return Ok(self.head.slice(at as usize..end as usize));
        }
        let mut buf = Vec::with_capacity(len);
        if at < in_head {
            buf.extend_from_slice(&self.head[at as usize..]);
        }
        let from = at + buf.len() as u64;
        let want = (len - buf.len()) as u64;
        // Read into the spare capacity: no zero-filling of a buffer about to be overwritten.
        let read = self
            .file
            .seek(SeekFrom::Start(from))
            .and_then(|_| (&mut self.file).take(want).read_to_end(&mut buf));
        match read {
            Ok(n) if n as u64 == want => Ok(Bytes::from(buf)),
            Ok(n) => Err(Error::backend(format!(
                "fs store: reading object body: {n} of {want} bytes at {from} (truncated file?)"
            ))),
            Err(e) => Err(Error::backend(format!(
                "fs store: reading object body: {e}"
            ))),
        }
    }
}

/// Opens the object file at `path` holding `key` and decodes its header: `None` when there is
/// no file. The first read takes the whole file if it is at most `whole_up_to` bytes (a small
/// object's header and body in one `read`), else [`HEADER_PROBE`] bytes.
pub(super) fn read_record(path: &Path, key: &Key, whole_up_to: usize) -> Result<Option<Record>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_context(e, "opening", path)),
    };
    let len = file
        .metadata()
        .map_err(|e| io_context(e, "reading the size of", path))?
        .len();
    let want = if len <= whole_up_to as u64 {
        len as usize
    } else {
        len.min(HEADER_PROBE as u64) as usize
    };
    let mut head = vec![0u8; want];
    let got = read_full(&mut file, &mut head).map_err(|e| io_context(e, "reading", path))?;
    head.truncate(got);
    // Metadata longer than the probe: read the rest of it (bounded by MAX_META_LEN).
    if let Some(end) = metadata_end(&head) {
        if end > head.len() && end as u64 <= len {
            let from = head.len();
            head.resize(end, 0);
            let got = read_full(&mut file, &mut head[from..])
                .map_err(|e| io_context(e, "reading", path))?;
            head.truncate(from + got);
        }
    }
    let (meta, body_offset) = decode_header(&head, len, key)
        .map_err(|why| Error::backend(format!("fs store: corrupt object file {path:?}: {why}")))?;
    Ok(Some(Record {
        file,
        meta,
        body_offset,
        head: Bytes::from(head),
    }))
}

/// Reads into `buf` until it is full or the file ends; the number of bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Where the metadata ends, from a fixed header that looks sane; `None` otherwise.
fn metadata_end(head: &[u8]) -> Option<usize> {
    let fixed = head.get(..FIXED_HEADER)?;
    let meta_len = u32::from_le_bytes(fixed[8..12].try_into().ok()?) as usize;
    (&fixed[..8] == MAGIC && meta_len <= MAX_META_LEN).then_some(FIXED_HEADER + meta_len)
}

/// Checks the header at the start of `bytes` (the first bytes of an object file of `len`
/// bytes holding `key`): the metadata and the body's offset, or why the file is corrupt.
pub(super) fn decode_header(
    bytes: &[u8],
    len: u64,
    key: &Key,
) -> std::result::Result<(Meta, u64), String> {
    let fixed = bytes
        .get(..FIXED_HEADER)
        .ok_or_else(|| format!("short header: {} bytes", bytes.len()))?;
    if &fixed[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let meta_len = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes")) as usize;
    let body_offset = u64::from_le_bytes(fixed[12..20].try_into().expect("8 bytes"));
    if meta_len > MAX_META_LEN || body_offset < (FIXED_HEADER + meta_len) as u64 {
        return Err("bad header lengths".into());
    }
    let encoded = bytes
        .get(FIXED_HEADER..FIXED_HEADER + meta_len)
        .ok_or_else(|| format!("short metadata: {meta_len} bytes announced"))?;
    let meta = Meta::decode(encoded).map_err(|e| e.to_string())?;
    if &meta.key != key {
        return Err(format!("it holds key {}", meta.key));
    }
    if body_offset.checked_add(meta.size) != Some(len) {
        return Err(format!(
            "file is {len} bytes, header says {} + {}",
            body_offset, meta.size
        ));
    }
    Ok((meta, body_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_metadata(bytes: usize) -> PutOptions {
        let mut opts = PutOptions::default();
        opts.metadata.insert("m".into(), "v".repeat(bytes));
        opts
    }

    #[test]
    fn metadata_over_the_read_bound_is_refused_before_writing() {
        let key = Key::new("big").unwrap();
        let fits = with_metadata(1 << 20);
        check_meta_fits(&key, &fits).unwrap();
        let over = with_metadata(MAX_META_LEN);
        match check_meta_fits(&key, &over) {
            Err(Error::InvalidInput(msg)) => assert!(msg.contains("over the limit"), "{msg}"),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        let meta = Meta::next_version(&key, ETag::of(b""), 0, None, &over).unwrap();
        assert!(matches!(encode_meta(&meta), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn headers_decode_from_a_prefix_of_the_file() {
        let key = Key::new("k").unwrap();
        let meta =
            Meta::next_version(&key, ETag::of(b"abc"), 3, None, &PutOptions::default()).unwrap();
        let encoded = encode_meta(&meta).unwrap();
        let offset = (FIXED_HEADER + encoded.len()) as u64;
        let mut file = header_bytes(&encoded, offset, 3);
        file.extend_from_slice(b"abc");
        let (got, at) = decode_header(&file, file.len() as u64, &key).unwrap();
        assert_eq!((got, at), (meta, offset));
        assert_eq!(metadata_end(&file), Some(offset as usize));
        let cut = &file[..FIXED_HEADER + 2];
        assert!(decode_header(cut, file.len() as u64, &key)
            .unwrap_err()
            .starts_with("short metadata"));
        assert!(decode_header(&file[..5], file.len() as u64, &key)
            .unwrap_err()
            .starts_with("short header"));
    }
}
