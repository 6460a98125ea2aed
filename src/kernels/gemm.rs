//! General strided matrix product `C = A·B (+ C)` for training.
//!
//! The inference pointwise kernel multiplies by a weight matrix packed once;
//! training's backward pass needs products with transposed operands that
//! change every step: `dX = dY·W` and `dW = dYᵀ·X` (paper notation: the
//! `D_F²·M·N` mult-adds of a pointwise layer, twice more). Those go through
//! the `matrixmultiply` crate, whose packed, register-blocked `sgemm` takes
//! any row and column strides, so a transposed operand is only a stride
//! swap. This module is the safe, shape-checked door to it.

use crate::error::{Error, Result};

/// A read-only view of a `rows x cols` matrix in a slice: element `(i, j)`
/// is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major matrix (`data.len()` must be `rows * cols`).
    ///
    /// ```
    /// use mobilenet::kernels::gemm::{MatRef, matmul};
    /// let a = MatRef::row_major(&[1.0, 2.0, 3.0, 4.0], 2, 2).unwrap();
    /// let b = MatRef::row_major(&[1.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
    /// let mut c = [0.0; 4];
    /// matmul(a.t(), b, &mut c, false).unwrap(); // Aᵀ·I
    /// assert_eq!(c, [1.0, 3.0, 2.0, 4.0]);
    /// ```
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::Shape(format!(
                "matrix [{rows}, {cols}] needs {} elements, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        Ok(MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        })
    }

    /// The transpose (a view: only the strides swap).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Rows `range` of this matrix (a view: the strides stay). Errors if
    /// the range does not lie within the rows.
    ///
    /// ```
    /// use mobilenet::kernels::gemm::MatRef;
    /// let a = MatRef::row_major(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 2).unwrap();
    /// assert_eq!(a.row_range(1..3).unwrap().rows(), 2);
    /// assert!(a.t().row_range(1..3).is_err()); // the transpose has 2 rows
    /// ```
    pub fn row_range(self, range: std::ops::Range<usize>) -> Result<Self> {
        if range.start > range.end || range.end > self.rows {
            return Err(Error::Shape(format!(
                "rows {range:?} of a matrix with {} rows",
                self.rows
            )));
        }
        let rows = range.end - range.start;
        let offset = if rows == 0 || self.cols == 0 {
            0
        } else {
            range.start * self.row_stride
        };
        Ok(MatRef {
            data: &self.data[offset..],
            rows,
            ..self
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `c = a·b` (or `c += a·b` with `accumulate`), `c` contiguous row-major
/// `[a.rows(), b.cols()]`. Single-threaded: callers split the work.
///
/// Errors with [`Error::Shape`] if the inner dimensions differ or `c` has
/// the wrong length; writes nothing then.
pub fn matmul(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], accumulate: bool) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(Error::Shape(format!(
            "matmul: [{m}, {k}] x [{}, {n}]: inner dimensions differ",
            b.rows
        )));
    }
    if m.checked_mul(n) != Some(c.len()) {
        return Err(Error::Shape(format!(
            "matmul: output [{m}, {n}] needs {} elements, got {}",
            m.saturating_mul(n),
            c.len()
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return Ok(());
    }
    let strides = |s: usize| isize::try_from(s).map_err(|_| Error::TooLarge("stride".into()));
    let (rsa, csa, rsb, csb) = (
        strides(a.row_stride)?,
        strides(a.col_stride)?,
        strides(b.row_stride)?,
        strides(b.col_stride)?,
    );
    let n_isize = strides(n)?;
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: `MatRef`s are only built by `row_major` (which checks
    // rows * cols == len with row stride cols, column stride 1), `t`
    // (which swaps dimensions together with strides) and `row_range` (which
    // starts the slice at its first row, so that its last element is the
    // parent's element (end - 1, cols - 1)), so every element (i, j) with
    // i < rows, j < cols lies inside its slice. `c` has exactly
    // m * n elements, addressed with row stride n and column stride 1. The
    // three slices are distinct borrows (`c` is `&mut`), so they do not
    // alias. With beta = 0 matrixmultiply never reads `c`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n_isize,
            1,
        );
    }
    Ok(())
}

/// The plain triple loop (f64 sums): the oracle [`matmul`] is tested against.
pub fn matmul_reference(
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || m.checked_mul(n) != Some(c.len()) {
        return Err(Error::Shape(format!(
            "matmul: [{m}, {k}] x [{}, {n}] into {} elements",
            b.rows,
            c.len()
        )));
    }
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f64;
            for p in 0..k {
                let x = a.data[i * a.row_stride + p * a.col_stride];
                let y = b.data[p * b.row_stride + j * b.col_stride];
                sum += f64::from(x) * f64::from(y);
            }
            let out = &mut c[i * n + j];
            *out = if accumulate {
                (f64::from(*out) + sum) as f32
            } else {
                sum as f32
            };
        }
    }
    Ok(())
}
