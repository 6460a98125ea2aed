//! A minimal, bounds-checked FlatBuffers reader: just what reading a TFLite
//! file needs (tables, vtables, scalar fields, vectors of scalars and of
//! tables, strings, union values).
//!
//! Every read goes through [`Buf::bytes`], which checks the range against
//! the buffer with checked arithmetic, so no offset, length or vtable in a
//! damaged file can make us read out of bounds, overflow, or panic. Vector
//! lengths are checked against the bytes left in the file before anyone
//! iterates or allocates by them. The reader never follows offsets on its
//! own: callers walk a fixed schema path (model, subgraph, tensor, ...), so
//! offsets that point back at an enclosing object cannot make it loop.
//!
//! Binary layout (little-endian throughout):
//! * the buffer starts with a `u32` offset to the root table;
//! * a table starts with an `i32` "soffset": its vtable is at
//!   `table - soffset`;
//! * a vtable is `u16` vtable size in bytes, `u16` table size in bytes,
//!   then one `u16` per field: the field's offset inside the table, or 0
//!   when the field is absent (the reader then gets the schema default);
//! * a field that refers to a table, vector or string holds a `u32` offset
//!   relative to the field's own position;
//! * a vector is a `u32` element count followed by the elements; a vector of
//!   tables holds one `u32` offset per element, relative to the element;
//! * a string is a vector of bytes (followed by a NUL we do not need).

use crate::error::{Error, Result};

/// A `Format` error with the `tflite:` prefix.
pub(crate) fn format_err(msg: impl std::fmt::Display) -> Error {
    Error::Format(format!("tflite: {msg}"))
}

/// The whole file, with checked little-endian reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buf<'a> {
    data: &'a [u8],
}

impl<'a> Buf<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Buf<'a> {
        Buf { data }
    }

    /// The file's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    /// `len` bytes at `pos`, or an error naming `what`.
    pub(crate) fn bytes(&self, pos: usize, len: usize, what: &str) -> Result<&'a [u8]> {
        pos.checked_add(len)
            .and_then(|end| self.data.get(pos..end))
            .ok_or_else(|| {
                format_err(format!(
                    "{what}: {len} bytes at offset {pos} run past the end of the file ({} bytes)",
                    self.data.len()
                ))
            })
    }

    fn array<const N: usize>(&self, pos: usize, what: &str) -> Result<[u8; N]> {
        let bytes = self.bytes(pos, N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&self, pos: usize, what: &str) -> Result<u8> {
        Ok(self.array::<1>(pos, what)?[0])
    }

    pub(crate) fn u16(&self, pos: usize, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(pos, what)?))
    }

    pub(crate) fn u32(&self, pos: usize, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(pos, what)?))
    }

    pub(crate) fn i32(&self, pos: usize, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(pos, what)?))
    }

    pub(crate) fn u64(&self, pos: usize, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(pos, what)?))
    }

    pub(crate) fn i64(&self, pos: usize, what: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(pos, what)?))
    }

    pub(crate) fn f32(&self, pos: usize, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array(pos, what)?))
    }

    /// Follows the `u32` offset stored at `pos` (relative to `pos`).
    fn follow(&self, pos: usize, what: &str) -> Result<usize> {
        let rel = self.u32(pos, what)?;
        let target = usize::try_from(rel)
            .ok()
            .and_then(|rel| pos.checked_add(rel))
            .filter(|&t| t < self.data.len())
            .ok_or_else(|| {
                format_err(format!(
                    "{what}: offset {rel} at {pos} points outside the file ({} bytes)",
                    self.data.len()
                ))
            })?;
        Ok(target)
    }

    /// The root table, after checking the 4-byte file identifier at bytes
    /// 4..8.
    pub(crate) fn root(&self, identifier: &[u8; 4], what: &str) -> Result<Table<'a>> {
        if self.data.len() < 8 {
            return Err(format_err(format!(
                "{what}: the file is {} bytes long, too short for a FlatBuffer",
                self.data.len()
            )));
        }
        let id = self.bytes(4, 4, what)?;
        if id != identifier {
            return Err(format_err(format!(
                "{what}: file identifier {:?} is not {:?} (not a TFLite model file)",
                String::from_utf8_lossy(id),
                String::from_utf8_lossy(identifier)
            )));
        }
        let pos = self.follow(0, what)?;
        Table::at(*self, pos, what)
    }
}

/// One table: its position and its (checked) vtable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Table<'a> {
    buf: Buf<'a>,
    pos: usize,
    vtable: usize,
    vtable_len: usize,
    table_len: usize,
}

impl<'a> Table<'a> {
    /// The table at `pos`, with its vtable checked to lie in the file and
    /// the table's claimed inline size to fit in the file.
    pub(crate) fn at(buf: Buf<'a>, pos: usize, what: &str) -> Result<Table<'a>> {
        let soffset = buf.i32(pos, what)?;
        let vtable = i64::try_from(pos)
            .ok()
            .and_then(|p| p.checked_sub(i64::from(soffset)))
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v < buf.len())
            .ok_or_else(|| {
                format_err(format!(
                    "{what}: the vtable of the table at offset {pos} (soffset {soffset}) lies \
                     outside the file"
                ))
            })?;
        let vtable_len = usize::from(buf.u16(vtable, what)?);
        let table_len = usize::from(buf.u16(vtable + 2, what)?);
        if vtable_len < 4 || vtable_len % 2 != 0 {
            return Err(format_err(format!(
                "{what}: the vtable at offset {vtable} has an invalid size {vtable_len}"
            )));
        }
        if table_len < 4 {
            return Err(format_err(format!(
                "{what}: the table at offset {pos} has an invalid size {table_len}"
            )));
        }
        buf.bytes(vtable, vtable_len, what)?;
        buf.bytes(pos, table_len, what)?;
        Ok(Table {
            buf,
            pos,
            vtable,
            vtable_len,
            table_len,
        })
    }

    /// The file this table is in.
    pub(crate) fn buf(&self) -> Buf<'a> {
        self.buf
    }

    /// The position of field `slot` if it is present, checking that a field
    /// of `size` bytes fits inside the table.
    fn field(&self, slot: usize, size: usize, what: &str) -> Result<Option<usize>> {
        let entry = slot
            .checked_mul(2)
            .and_then(|s| s.checked_add(4))
            .ok_or_else(|| format_err(format!("{what}: field {slot} is out of range")))?;
        if entry + 2 > self.vtable_len {
            return Ok(None); // written by an older schema: the default
        }
        let offset = usize::from(self.buf.u16(self.vtable + entry, what)?);
        if offset == 0 {
            return Ok(None);
        }
        if offset < 4
            || offset
                .checked_add(size)
                .is_none_or(|end| end > self.table_len)
        {
            return Err(format_err(format!(
                "{what}: field at offset {offset} (size {size}) lies outside its table of {} \
                 bytes at offset {}",
                self.table_len, self.pos
            )));
        }
        Ok(Some(self.pos + offset))
    }

    pub(crate) fn u8_or(&self, slot: usize, default: u8, what: &str) -> Result<u8> {
        match self.field(slot, 1, what)? {
            Some(p) => self.buf.u8(p, what),
            None => Ok(default),
        }
    }

    pub(crate) fn i8_or(&self, slot: usize, default: i8, what: &str) -> Result<i8> {
        Ok(self.u8_or(slot, default as u8, what)? as i8)
    }

    pub(crate) fn i32_or(&self, slot: usize, default: i32, what: &str) -> Result<i32> {
        match self.field(slot, 4, what)? {
            Some(p) => self.buf.i32(p, what),
            None => Ok(default),
        }
    }

    pub(crate) fn u32_or(&self, slot: usize, default: u32, what: &str) -> Result<u32> {
        match self.field(slot, 4, what)? {
            Some(p) => self.buf.u32(p, what),
            None => Ok(default),
        }
    }

    pub(crate) fn u64_or(&self, slot: usize, default: u64, what: &str) -> Result<u64> {
        match self.field(slot, 8, what)? {
            Some(p) => self.buf.u64(p, what),
            None => Ok(default),
        }
    }

    pub(crate) fn f32_or(&self, slot: usize, default: f32, what: &str) -> Result<f32> {
        match self.field(slot, 4, what)? {
            Some(p) => self.buf.f32(p, what),
            None => Ok(default),
        }
    }

    /// The sub-table (or union value) in field `slot`, if present.
    pub(crate) fn table(&self, slot: usize, what: &str) -> Result<Option<Table<'a>>> {
        match self.field(slot, 4, what)? {
            Some(p) => {
                let target = self.buf.follow(p, what)?;
                Table::at(self.buf, target, what).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The vector in field `slot` with elements of `elem_size` bytes, if
    /// present; its whole extent is checked to lie in the file.
    pub(crate) fn vector(
        &self,
        slot: usize,
        elem_size: usize,
        what: &str,
    ) -> Result<Option<Vector<'a>>> {
        match self.field(slot, 4, what)? {
            Some(p) => {
                let target = self.buf.follow(p, what)?;
                Vector::at(self.buf, target, elem_size, what).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Like [`Table::vector`], an absent vector read as empty.
    pub(crate) fn vector_or_empty(
        &self,
        slot: usize,
        elem_size: usize,
        what: &str,
    ) -> Result<Vector<'a>> {
        Ok(self
            .vector(slot, elem_size, what)?
            .unwrap_or_else(|| Vector::empty(self.buf, elem_size)))
    }

    /// The string in field `slot`, if present: at most its first `max`
    /// bytes (so a huge string costs nothing), invalid UTF-8 replaced.
    pub(crate) fn string(&self, slot: usize, max: usize, what: &str) -> Result<Option<String>> {
        Ok(self.vector(slot, 1, what)?.map(|v| {
            let bytes = v.bytes();
            let mut s = String::from_utf8_lossy(bytes.get(..max).unwrap_or(bytes)).into_owned();
            if bytes.len() > max {
                s.push_str("...");
            }
            s
        }))
    }
}

/// A vector whose elements are known to lie in the file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vector<'a> {
    buf: Buf<'a>,
    start: usize,
    len: usize,
    elem_size: usize,
}

impl<'a> Vector<'a> {
    fn at(buf: Buf<'a>, pos: usize, elem_size: usize, what: &str) -> Result<Vector<'a>> {
        let claimed = buf.u32(pos, what)?;
        let start = pos + 4; // cannot overflow: pos + 4 <= len after the read
        let total = usize::try_from(claimed)
            .ok()
            .and_then(|n| n.checked_mul(elem_size));
        match total {
            Some(total) if start.checked_add(total).is_some_and(|e| e <= buf.len()) => Ok(Vector {
                buf,
                start,
                len: claimed as usize,
                elem_size,
            }),
            _ => Err(format_err(format!(
                "{what}: vector at offset {pos} claims {claimed} elements of {elem_size} bytes, \
                 more than the file holds ({} bytes)",
                buf.len()
            ))),
        }
    }

    fn empty(buf: Buf<'a>, elem_size: usize) -> Vector<'a> {
        Vector {
            buf,
            start: 0,
            len: 0,
            elem_size,
        }
    }

    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The raw bytes of all elements.
    pub(crate) fn bytes(&self) -> &'a [u8] {
        // Checked in `Vector::at`; `get` keeps it panic-free regardless.
        self.buf
            .data
            .get(self.start..self.start + self.len * self.elem_size)
            .unwrap_or(&[])
    }

    fn elem(&self, i: usize, what: &str) -> Result<usize> {
        if i >= self.len {
            return Err(format_err(format!(
                "{what}: index {i} out of range for a vector of {} elements",
                self.len
            )));
        }
        Ok(self.start + i * self.elem_size)
    }

    pub(crate) fn i32(&self, i: usize, what: &str) -> Result<i32> {
        self.buf.i32(self.elem(i, what)?, what)
    }

    pub(crate) fn i64(&self, i: usize, what: &str) -> Result<i64> {
        self.buf.i64(self.elem(i, what)?, what)
    }

    pub(crate) fn f32(&self, i: usize, what: &str) -> Result<f32> {
        self.buf.f32(self.elem(i, what)?, what)
    }

    /// Element `i` of a vector of tables.
    pub(crate) fn table(&self, i: usize, what: &str) -> Result<Table<'a>> {
        let p = self.elem(i, what)?;
        let target = self.buf.follow(p, what)?;
        Table::at(self.buf, target, what)
    }

    /// All elements of a vector of `i32`.
    pub(crate) fn i32s(&self, what: &str) -> Result<Vec<i32>> {
        (0..self.len).map(|i| self.i32(i, what)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny hand-assembled buffer: root table with one i32 field (7) and
    /// one vector of two i32s.
    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(16u32.to_le_bytes()); // 0: root offset -> 16
        b.extend(*b"TEST"); // 4: identifier
        // 8: vtable: size 8, table size 12, field0 at 4, field1 at 8
        b.extend(8u16.to_le_bytes());
        b.extend(12u16.to_le_bytes());
        b.extend(4u16.to_le_bytes());
        b.extend(8u16.to_le_bytes());
        // 16: table: soffset 8 (vtable at 8), field0 = 7, field1 offset -> 28
        b.extend(8i32.to_le_bytes());
        b.extend(7i32.to_le_bytes());
        b.extend(4u32.to_le_bytes()); // at 24 -> 28
        // 28: vector of 2 i32
        b.extend(2u32.to_le_bytes());
        b.extend(10i32.to_le_bytes());
        b.extend((-3i32).to_le_bytes());
        b
    }

    #[test]
    fn reads_fields_and_vectors() {
        let data = sample();
        let root = Buf::new(&data).root(b"TEST", "t").unwrap();
        assert_eq!(root.i32_or(0, 0, "f0").unwrap(), 7);
        assert_eq!(root.i32_or(5, 42, "absent").unwrap(), 42);
        let v = root.vector(1, 4, "v").unwrap().unwrap();
        assert_eq!(v.i32s("v").unwrap(), vec![10, -3]);
        assert!(v.i32(2, "v").is_err());
    }

    #[test]
    fn rejects_damage_without_panicking() {
        let data = sample();
        assert!(Buf::new(&data).root(b"TFL3", "t").is_err());
        for cut in 0..data.len() {
            let short = &data[..cut];
            if let Ok(root) = Buf::new(short).root(b"TEST", "t") {
                let _ = root.i32_or(0, 0, "f0");
                let _ = root.vector(1, 4, "v");
            }
        }
        let mut huge = data.clone();
        huge[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        let root = Buf::new(&huge).root(b"TEST", "t").unwrap();
        assert!(root.vector(1, 4, "v").is_err());
        let mut bad_vtable = data.clone();
        bad_vtable[16..20].copy_from_slice(&i32::MIN.to_le_bytes());
        assert!(Buf::new(&bad_vtable).root(b"TEST", "t").is_err());
    }
}
