//! A mutable view of a range of columns of a row-major matrix.
//!
//! Splitting a GEMM over its output columns (N) instead of its rows (M)
//! lets each thread stream only its share of the weights: for layers whose
//! weights outweigh their activations (MobileNet's last 7x7 blocks at
//! batch 1) that halves each core's memory traffic, which is how XNNPACK
//! parallelizes them too. The threads then write interleaved pieces of the
//! same output rows, which `&mut [f32]` cannot express: a [`ColumnsMut`] is
//! an exclusive borrow of a rectangle of columns, split like
//! `split_at_mut` but along columns.

use std::marker::PhantomData;

use crate::error::{Result, shape_err};

/// Columns `first_col()..first_col() + cols()` of every row of a row-major
/// `[rows, stride]` matrix, borrowed exclusively.
#[derive(Debug)]
pub struct ColumnsMut<'a> {
    /// Element (0, 0) of the view.
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    stride: usize,
    first_col: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `ColumnsMut` is an exclusive borrow of its elements, exactly
// like the `&mut [f32]` it was made from (which is `Send`), and views that
// can exist at the same time never share an element.
unsafe impl Send for ColumnsMut<'_> {}

impl<'a> ColumnsMut<'a> {
    /// All columns of `data`, a row-major `[rows, cols]` matrix.
    ///
    /// ```
    /// use mobilenet::kernels::ColumnsMut;
    /// let mut m = vec![0.0f32; 2 * 5];
    /// let (mut left, mut right) = ColumnsMut::new(&mut m, 2, 5).unwrap().split_at(3);
    /// left.row_mut(1).fill(1.0);
    /// right.row_mut(0).fill(2.0);
    /// assert_eq!(m, [0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    /// ```
    ///
    /// Errors with [`crate::Error::Shape`] unless `data.len() == rows * cols`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            shape_err!(
                "column view: {} elements are not {rows} rows of {cols}",
                data.len()
            );
        }
        Ok(ColumnsMut {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            stride: cols,
            first_col: 0,
            _borrow: PhantomData,
        })
    }

    /// Splits into columns `..at` and `at..` of this view.
    ///
    /// # Panics
    /// If `at > self.cols()`.
    pub fn split_at(self, at: usize) -> (ColumnsMut<'a>, ColumnsMut<'a>) {
        assert!(at <= self.cols, "split at column {at} of {}", self.cols);
        let left = ColumnsMut { cols: at, ..self };
        let right = ColumnsMut {
            // Within row 0 of the view (one past its end at most) when the
            // view has rows; `wrapping_add` because a view of no rows may
            // hold a dangling pointer, never dereferenced.
            ptr: self.ptr.wrapping_add(at),
            cols: self.cols - at,
            first_col: self.first_col + at,
            ..self
        };
        (left, right)
    }

    /// Rows of the view.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the view.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Elements from one row of the underlying matrix to the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Index of the view's first column in the underlying matrix.
    pub fn first_col(&self) -> usize {
        self.first_col
    }

    /// Row `i` of the view: `cols()` elements.
    ///
    /// # Panics
    /// If `i >= self.rows()`.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows, "row {i} of {}", self.rows);
        // SAFETY: row i of the view is `cols` elements starting at
        // `ptr + i * stride`, inside the original slice (i < rows and
        // first_col + cols <= stride), and this view borrows them
        // exclusively for as long as `self` is borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.stride), self.cols) }
    }

    /// Pointer to element (0, 0); row `i` starts `i * stride()` further.
    /// Writes through it must stay within the view's columns.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut f32 {
        self.ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_every_element_once() {
        let (rows, cols) = (3, 7);
        let mut m = vec![0.0f32; rows * cols];
        let view = ColumnsMut::new(&mut m, rows, cols).unwrap();
        let (a, rest) = view.split_at(2);
        let (b, c) = rest.split_at(4);
        assert_eq!((a.first_col(), b.first_col(), c.first_col()), (0, 2, 6));
        assert_eq!((a.cols(), b.cols(), c.cols()), (2, 4, 1));
        for (tag, mut v) in [(1.0, a), (2.0, b), (3.0, c)] {
            assert_eq!(v.stride(), cols);
            for i in 0..v.rows() {
                for x in v.row_mut(i) {
                    *x += tag;
                }
            }
        }
        for row in m.chunks(cols) {
            assert_eq!(row, [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0]);
        }
    }

    #[test]
    fn empty_views_and_bad_shapes() {
        let mut m = vec![0.0f32; 6];
        assert!(ColumnsMut::new(&mut m, 4, 2).is_err());
        assert!(ColumnsMut::new(&mut m, usize::MAX, 2).is_err());
        let (mut left, right) = ColumnsMut::new(&mut m, 2, 3).unwrap().split_at(0);
        assert_eq!(left.row_mut(1).len(), 0);
        assert_eq!(right.cols(), 3);
        let mut none: Vec<f32> = Vec::new();
        let view = ColumnsMut::new(&mut none, 0, 5).unwrap();
        assert_eq!(view.rows(), 0);
    }
}
