//! EBML element writing (RFC 8794): element IDs, variable-size integers and the few value
//! kinds Matroska needs. Writes append to a caller's `Vec<u8>`; nothing here reads.

/// The 8-byte "unknown size" marker of a master element still being written.
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// Appends an element ID (IDs carry their own length marker, so it is written as its bytes).
pub fn put_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8) as usize;
    out.extend_from_slice(bytes.get(skip.min(3)..).unwrap_or(&bytes));
}

/// Appends `size` as the shortest EBML variable-size integer (all-ones values are reserved,
/// so a value of 2^(7n)-1 takes n+1 bytes).
pub fn put_size(out: &mut Vec<u8>, size: u64) {
    let mut len = 1;
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    put_size_fixed(out, size, len);
}

/// Appends `size` as an EBML variable-size integer of exactly `len` bytes (1..=8); the caller
/// makes sure it fits (a larger value is cut to its low bits).
pub fn put_size_fixed(out: &mut Vec<u8>, size: u64, len: usize) {
    let len = len.clamp(1, 8);
    let marked = (size & ((1u64 << (7 * len)) - 1)) | (1u64 << (7 * len));
    let bytes = marked.to_be_bytes();
    out.extend_from_slice(&bytes[8 - len..]);
}

/// The 8-byte size field for `size`, for patching a master element written with
/// [`UNKNOWN_SIZE`].
pub fn size8(size: u64) -> [u8; 8] {
    let mut v = Vec::with_capacity(8);
    put_size_fixed(&mut v, size, 8);
    let mut out = [0u8; 8];
    out.copy_from_slice(&v);
    out
}

/// An unsigned integer element, in as few bytes as the value needs (at least one).
pub fn put_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let len = (8 - (value.leading_zeros() / 8) as usize).max(1);
    put_id(out, id);
    put_size(out, len as u64);
    out.extend_from_slice(&value.to_be_bytes()[8 - len..]);
}

/// An unsigned integer element always 8 bytes long (a value patched later).
pub fn put_uint8(out: &mut Vec<u8>, id: u32, value: u64) {
    put_id(out, id);
    put_size(out, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

/// A float element, 8 bytes (IEEE 754 double).
pub fn put_float(out: &mut Vec<u8>, id: u32, value: f64) {
    put_id(out, id);
    put_size(out, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

/// A binary (or UTF-8 / ASCII string) element.
pub fn put_bytes(out: &mut Vec<u8>, id: u32, value: &[u8]) {
    put_id(out, id);
    put_size(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A master element whose children are already serialised in `body`.
pub fn put_master(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    put_bytes(out, id, body);
}

/// A Void element (ID 0xEC) taking exactly `total` bytes (at least 2), for space reserved to
/// be overwritten later.
pub fn put_void(out: &mut Vec<u8>, total: usize) {
    let total = total.max(2);
    out.push(0xEC);
    if total - 2 < 127 {
        put_size_fixed(out, (total - 2) as u64, 1);
        out.resize(out.len() + total - 2, 0);
    } else {
        put_size_fixed(out, (total - 9) as u64, 8);
        out.resize(out.len() + total - 9, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ids() {
        let mut v = Vec::new();
        put_size(&mut v, 0);
        put_size(&mut v, 126);
        put_size(&mut v, 127);
        put_size(&mut v, 300);
        assert_eq!(v, [0x80, 0xFE, 0x40, 0x7F, 0x41, 0x2C]);
        let mut v = Vec::new();
        put_id(&mut v, 0x1A45_DFA3);
        put_id(&mut v, 0xA3);
        put_id(&mut v, 0x4286);
        assert_eq!(v, [0x1A, 0x45, 0xDF, 0xA3, 0xA3, 0x42, 0x86]);
        assert_eq!(size8(5), [0x01, 0, 0, 0, 0, 0, 0, 5]);
        let mut v = Vec::new();
        put_void(&mut v, 21);
        assert_eq!(v.len(), 21);
        assert_eq!(&v[..2], &[0xEC, 0x80 | 19]);
    }

    #[test]
    fn uints() {
        let mut v = Vec::new();
        put_uint(&mut v, 0xD7, 0);
        put_uint(&mut v, 0xD7, 0x1234);
        assert_eq!(v, [0xD7, 0x81, 0x00, 0xD7, 0x82, 0x12, 0x34]);
    }
}
