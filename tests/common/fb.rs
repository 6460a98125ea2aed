//! Just enough of a FlatBuffers walker over a `.tflite` file to find bytes
//! to damage in tests (offsets only; the library's reader is not used).

/// A `.tflite` file's bytes.
pub struct Fb<'a>(pub &'a [u8]);

impl Fb<'_> {
    pub fn u32(&self, p: usize) -> usize {
        u32::from_le_bytes(self.0[p..p + 4].try_into().unwrap()) as usize
    }
    pub fn u16(&self, p: usize) -> usize {
        u16::from_le_bytes(self.0[p..p + 2].try_into().unwrap()) as usize
    }
    pub fn root(&self) -> usize {
        self.u32(0)
    }
    /// Position of field `slot` of the table at `t`, if present.
    pub fn field(&self, t: usize, slot: usize) -> Option<usize> {
        let soffset = i32::from_le_bytes(self.0[t..t + 4].try_into().unwrap());
        let vt = (t as i64 - soffset as i64) as usize;
        let entry = 4 + 2 * slot;
        if entry >= self.u16(vt) {
            return None;
        }
        match self.u16(vt + entry) {
            0 => None,
            off => Some(t + off),
        }
    }
    /// Follows the offset stored at `p`.
    pub fn deref(&self, p: usize) -> usize {
        p + self.u32(p)
    }
    /// The vector in field `slot` of table `t`.
    pub fn vector(&self, t: usize, slot: usize) -> usize {
        self.deref(self.field(t, slot).expect("vector field"))
    }
    /// Element `i` of a vector of tables.
    pub fn table_at(&self, v: usize, i: usize) -> usize {
        self.deref(v + 4 + 4 * i)
    }
    pub fn i32_at(&self, v: usize, i: usize) -> usize {
        self.u32(v + 4 + 4 * i)
    }
    /// `(start, len)` of the data of every non-empty buffer.
    pub fn buffer_ranges(&self) -> Vec<(usize, usize)> {
        let buffers = self.vector(self.root(), 4);
        (0..self.u32(buffers))
            .filter_map(|i| {
                let b = self.table_at(buffers, i);
                let data = self.deref(self.field(b, 0)?);
                Some((data + 4, self.u32(data)))
            })
            .collect()
    }
    /// The first subgraph.
    pub fn subgraph(&self) -> usize {
        self.table_at(self.vector(self.root(), 2), 0)
    }
    /// Table of tensor `i`.
    pub fn tensor(&self, i: usize) -> usize {
        self.table_at(self.vector(self.subgraph(), 0), i)
    }
    /// Table of operator `i`.
    pub fn operator(&self, i: usize) -> usize {
        self.table_at(self.vector(self.subgraph(), 3), i)
    }
    /// Input tensor `n` of operator `op`.
    pub fn op_input(&self, op: usize, n: usize) -> usize {
        self.i32_at(self.vector(self.operator(op), 1), n)
    }
    /// Output tensor of operator `op`.
    pub fn op_output(&self, op: usize) -> usize {
        self.i32_at(self.vector(self.operator(op), 2), 0)
    }
    /// The model input tensor.
    pub fn model_input(&self) -> usize {
        self.i32_at(self.vector(self.subgraph(), 1), 0)
    }
    /// Position of the type byte of tensor `i`.
    pub fn tensor_type(&self, i: usize) -> usize {
        self.field(self.tensor(i), 1).expect("tensor type field")
    }
    /// Position of the first scale (f32) of tensor `i`.
    pub fn scale(&self, i: usize) -> usize {
        let q = self.deref(self.field(self.tensor(i), 4).expect("quantization"));
        self.vector(q, 2) + 4
    }
    /// Position of the first zero point (i64) of tensor `i`.
    pub fn zero_point(&self, i: usize) -> usize {
        let q = self.deref(self.field(self.tensor(i), 4).expect("quantization"));
        self.vector(q, 3) + 4
    }
    /// Positions of the opcode fields (deprecated byte, extended i32) of
    /// operator code `i`.
    pub fn opcode(&self, i: usize) -> (Option<usize>, Option<usize>) {
        let code = self.table_at(self.vector(self.root(), 1), i);
        (self.field(code, 0), self.field(code, 3))
    }
    /// The opcode index of operator `op`.
    pub fn opcode_index(&self, op: usize) -> usize {
        self.field(self.operator(op), 0).map_or(0, |p| self.u32(p))
    }
    /// Start of the data of the weights of operator `op`.
    pub fn weights_of(&self, op: usize) -> usize {
        let tensor = self.tensor(self.op_input(op, 1));
        let buffer = self.u32(self.field(tensor, 2).unwrap());
        let b = self.table_at(self.vector(self.root(), 4), buffer);
        self.deref(self.field(b, 0).unwrap()) + 4
    }
}
