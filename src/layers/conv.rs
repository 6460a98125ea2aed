//! Direct 2-D convolution: the reference ("oracle") implementation.
//!
//! [`conv2d`] is the most literal loop nest we could write for a convolution,
//! with every bound checked explicitly. It is not meant to be fast; it is
//! meant to be obviously correct, because every optimized kernel in
//! [`crate::kernels`] (depthwise, pointwise, stem) is tested against it.
//!
//! One function covers all the convolutions MobileNet v1 uses (paper §3.1):
//!
//! * standard convolution: `groups == 1`, weight `(N, M, D_K, D_K)`, costing
//!   `D_K·D_K·M·N·D_F·D_F` multiply-adds;
//! * depthwise convolution: `groups == M`, weight `(M, 1, D_K, D_K)`, costing
//!   `D_K·D_K·M·D_F·D_F`;
//! * pointwise convolution: a 1×1 standard convolution, costing `M·N·D_F·D_F`;
//! * and, in general, grouped convolution.
//!
//! Symbols follow the paper: `D_K` is the kernel size, `M` the number of
//! input channels, `N` the number of output channels and `D_F` the spatial
//! size of the feature map. (In code, `N` also names the batch dimension of
//! NHWC tensors; the docs say "batch" for that one.)

use crate::error::{Error, Result, shape_err};
use crate::tensor::Tensor;

/// Implicit zero padding added around the input, per side, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Padding {
    /// Rows of zeros above the input.
    pub top: usize,
    /// Rows of zeros below the input.
    pub bottom: usize,
    /// Columns of zeros left of the input.
    pub left: usize,
    /// Columns of zeros right of the input.
    pub right: usize,
}

impl Padding {
    /// The same padding `p` on all four sides.
    pub fn symmetric(p: usize) -> Padding {
        Padding {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    /// No padding.
    pub fn zero() -> Padding {
        Padding::default()
    }
}

/// How a network chooses its padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PaddingMode {
    /// PyTorch style: `(D_K - 1) * dilation / 2` on every side (for odd
    /// kernels this keeps `D_F` unchanged at stride 1).
    #[default]
    Symmetric,
    /// TensorFlow `'SAME'`: `out = ceil(in / stride)`;
    /// `total = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)`;
    /// `before = total / 2`, `after = total - before` (so at stride 2 on an
    /// even input with a 3×3 kernel: 0 before, 1 after).
    TfSame,
}

impl PaddingMode {
    /// Resolves to concrete padding for a kernel of `(kh, kw)` at the given
    /// stride and dilation on an `(in_h, in_w)` input.
    ///
    /// This never fails: a zero stride is treated as 1 here (so no division
    /// by zero) and arithmetic saturates; [`conv2d`] and
    /// [`conv_output_size`] are where bad parameters are rejected.
    ///
    /// ```
    /// use mobilenet::layers::{Padding, PaddingMode, conv_output_size};
    ///
    /// // PyTorch style: 1 pixel on every side for a 3x3 kernel.
    /// let p = PaddingMode::Symmetric.resolve(224, 224, [3, 3], [2, 2], [1, 1]);
    /// assert_eq!(p, Padding::symmetric(1));
    ///
    /// // TensorFlow 'SAME' at stride 2 on an even input: all of it after.
    /// let p = PaddingMode::TfSame.resolve(224, 224, [3, 3], [2, 2], [1, 1]);
    /// assert_eq!(p, Padding { top: 0, bottom: 1, left: 0, right: 1 });
    /// let out = conv_output_size(224, 3, 2, 1, p.top, p.bottom).unwrap();
    /// assert_eq!(out, 112); // ceil(224 / 2)
    /// ```
    pub fn resolve(
        self,
        in_h: usize,
        in_w: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Padding {
        let (top, bottom) = self.resolve_axis(in_h, kernel[0], stride[0], dilation[0]);
        let (left, right) = self.resolve_axis(in_w, kernel[1], stride[1], dilation[1]);
        Padding {
            top,
            bottom,
            left,
            right,
        }
    }

    /// `(before, after)` padding along one axis.
    fn resolve_axis(
        self,
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
    ) -> (usize, usize) {
        // Span of the dilated kernel minus one: (k - 1) * dilation.
        let span = kernel.saturating_sub(1).saturating_mul(dilation);
        match self {
            PaddingMode::Symmetric => (span / 2, span / 2),
            PaddingMode::TfSame => {
                let stride = stride.max(1);
                let out = input.div_ceil(stride);
                if out == 0 {
                    return (0, 0);
                }
                let needed = (out - 1)
                    .saturating_mul(stride)
                    .saturating_add(span)
                    .saturating_add(1);
                let total = needed.saturating_sub(input);
                let before = total / 2;
                (before, total - before)
            }
        }
    }
}

/// Parameters of a 2-D convolution besides its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between output pixels, `[vertical, horizontal]`.
    pub stride: [usize; 2],
    /// Spacing between kernel taps, `[vertical, horizontal]` (1 = dense).
    pub dilation: [usize; 2],
    /// Implicit zero padding around the input.
    pub padding: Padding,
    /// Number of channel groups: 1 for a standard convolution, `M` (the
    /// input channel count) for a depthwise one.
    pub groups: usize,
}

impl Default for Conv2dParams {
    /// Stride 1, dilation 1, no padding, one group.
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::zero(),
            groups: 1,
        }
    }
}

/// Output size along one axis:
/// `floor((in + before + after - dilation * (k - 1) - 1) / stride) + 1`.
///
/// Returns [`Error::InvalidConfig`] if the stride, dilation or kernel size is
/// 0, if the sizes overflow, or if the dilated kernel does not fit in the
/// padded input.
///
/// ```
/// use mobilenet::layers::conv_output_size;
/// assert_eq!(conv_output_size(224, 3, 2, 1, 1, 1).unwrap(), 112);
/// assert_eq!(conv_output_size(7, 3, 1, 2, 0, 0).unwrap(), 3); // dilated span 5
/// assert!(conv_output_size(2, 3, 1, 1, 0, 0).is_err()); // kernel does not fit
/// assert!(conv_output_size(8, 3, 0, 1, 1, 1).is_err()); // stride 0
/// ```
pub fn conv_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_before: usize,
    pad_after: usize,
) -> Result<usize> {
    if stride == 0 {
        return Err(Error::InvalidConfig(
            "convolution stride must be at least 1".into(),
        ));
    }
    if dilation == 0 {
        return Err(Error::InvalidConfig(
            "convolution dilation must be at least 1".into(),
        ));
    }
    if kernel == 0 {
        return Err(Error::InvalidConfig(
            "convolution kernel size must be at least 1".into(),
        ));
    }
    let padded = input
        .checked_add(pad_before)
        .and_then(|v| v.checked_add(pad_after))
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "input size {input} plus padding {pad_before}+{pad_after} overflows"
            ))
        })?;
    // Extent of the dilated kernel: (k - 1) * dilation + 1.
    let extent = (kernel - 1)
        .checked_mul(dilation)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| {
            Error::InvalidConfig(format!("kernel {kernel} at dilation {dilation} overflows"))
        })?;
    if extent > padded {
        return Err(Error::InvalidConfig(format!(
            "kernel {kernel} at dilation {dilation} spans {extent} pixels, more than the padded \
             input ({input} + {pad_before} + {pad_after} = {padded})"
        )));
    }
    Ok((padded - extent) / stride + 1)
}

/// The checked sizes of one convolution, shared by [`conv2d`] and
/// [`conv2d_backward`] so that both accept exactly the same arguments.
#[derive(Clone, Copy, Debug)]
struct ConvGeometry {
    batch: usize,
    in_h: usize,
    in_w: usize,
    c_in: usize,
    c_out: usize,
    c_in_per_group: usize,
    c_out_per_group: usize,
    k_h: usize,
    k_w: usize,
    out_h: usize,
    out_w: usize,
}

impl ConvGeometry {
    /// Checks the input and weight shapes against `params` (everything but
    /// the bias) and computes the output size.
    fn check(input: &Tensor, weight: &Tensor, params: &Conv2dParams) -> Result<ConvGeometry> {
        let [batch, in_h, in_w, c_in] = input.dims4("conv2d input (NHWC)")?;
        let [c_out, c_in_per_group, k_h, k_w] = match weight.shape() {
            &[o, i, kh, kw] => [o, i, kh, kw],
            other => {
                shape_err!(
                    "conv2d weight must have rank 4 [C_out, C_in/groups, K_h, K_w], got shape \
                     {other:?}"
                );
            }
        };
        let groups = params.groups;
        if groups == 0 {
            return Err(Error::InvalidConfig(
                "conv2d groups must be at least 1".into(),
            ));
        }
        if c_in % groups != 0 {
            return Err(Error::InvalidConfig(format!(
                "conv2d groups {groups} does not divide the {c_in} input channels"
            )));
        }
        if c_out % groups != 0 {
            return Err(Error::InvalidConfig(format!(
                "conv2d groups {groups} does not divide the {c_out} output channels"
            )));
        }
        if c_in_per_group != c_in / groups {
            shape_err!(
                "conv2d weight {:?} expects {c_in_per_group} input channels per group, but the \
                 input has {c_in} channels in {groups} group(s) ({} per group)",
                weight.shape(),
                c_in / groups
            );
        }
        let [s_h, s_w] = params.stride;
        let [d_h, d_w] = params.dilation;
        let pad = params.padding;
        let out_h = conv_output_size(in_h, k_h, s_h, d_h, pad.top, pad.bottom)?;
        let out_w = conv_output_size(in_w, k_w, s_w, d_w, pad.left, pad.right)?;
        Ok(ConvGeometry {
            batch,
            in_h,
            in_w,
            c_in,
            c_out,
            c_in_per_group,
            c_out_per_group: c_out / groups,
            k_h,
            k_w,
            out_h,
            out_w,
        })
    }
}

/// Largest number of f32 elements we agree to allocate for an output (the
/// most a `Vec<f32>` can hold).
const MAX_ELEMENTS: usize = isize::MAX as usize / std::mem::size_of::<f32>();

/// Direct 2-D convolution (cross-correlation, as in every deep learning
/// framework: the kernel is not flipped).
///
/// * `input`: NHWC `[batch, H, W, C_in]` (`D_F × D_F × M` per image);
/// * `weight`: `[C_out, C_in / groups, K_h, K_w]` (PyTorch OIHW; for a
///   depthwise convolution `groups == C_in` and the weight is
///   `(M, 1, D_K, D_K)`);
/// * `bias`: optional, `[C_out]`;
/// * output: NHWC `[batch, H_out, W_out, C_out]`, sizes from
///   [`conv_output_size`].
///
/// Output channel `o` belongs to group `g = o / (C_out / groups)` and sees
/// only input channels `g * C_in/groups .. (g + 1) * C_in/groups`:
///
/// ```text
/// y[b, i, j, o] = bias[o] + Σ_{ky, kx, c} x[b, i*s_h + ky*d_h - top, j*s_w + kx*d_w - left, g*C_in/groups + c] * w[o, c, ky, kx]
/// ```
///
/// where taps falling in the padding contribute zero.
///
/// **Accumulation**: each output is summed in **f64**, in the fixed order
/// `ky`, then `kx`, then `c` (all ascending); the bias is added last and the
/// sum is rounded to f32 once. The oracle is therefore at least as accurate
/// as any f32 kernel tested against it.
///
/// Errors: [`Error::Shape`] for wrong ranks, a weight whose second dimension
/// is not `C_in / groups`, or a bias that is not `[C_out]`;
/// [`Error::InvalidConfig`] for zero stride, dilation, kernel size or groups,
/// groups not dividing `C_in` or `C_out`, or a kernel larger than the padded
/// input; [`Error::TooLarge`] if the output could not be allocated.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::{Conv2dParams, conv2d};
///
/// // One 3x3 single-channel image, one 2x2 filter.
/// let x = Tensor::new(vec![1, 3, 3, 1], (1..=9).map(|v| v as f32).collect()).unwrap();
/// let w = Tensor::new(vec![1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// let b = Tensor::new(vec![1], vec![0.5]).unwrap();
/// let y = conv2d(&x, &w, Some(&b), &Conv2dParams::default()).unwrap();
/// assert_eq!(y.shape(), &[1, 2, 2, 1]);
/// // Top-left: 1*1 + 2*2 + 4*3 + 5*4 + 0.5
/// assert_eq!(y.data(), &[37.5, 47.5, 67.5, 77.5]);
/// ```
pub fn conv2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    params: &Conv2dParams,
) -> Result<Tensor> {
    let geometry = ConvGeometry::check(input, weight, params)?;
    let ConvGeometry {
        batch,
        in_h,
        in_w,
        c_in,
        c_out,
        c_in_per_group,
        c_out_per_group,
        k_h,
        k_w,
        out_h,
        out_w,
    } = geometry;
    let bias = match bias {
        None => None,
        Some(b) if b.shape() == [c_out] => Some(b.data()),
        Some(b) => {
            shape_err!("conv2d bias must have shape [{c_out}], got {:?}", b.shape());
        }
    };
    let [s_h, s_w] = params.stride;
    let [d_h, d_w] = params.dilation;
    let pad = params.padding;
    let out_len = [batch, out_h, out_w, c_out]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            Error::TooLarge(format!(
                "conv2d output [{batch}, {out_h}, {out_w}, {c_out}] has too many elements"
            ))
        })?;

    let x = input.data();
    let w = weight.data();
    let mut out = vec![0.0f32; out_len];

    for b in 0..batch {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for oc in 0..c_out {
                    let group = oc / c_out_per_group;
                    let c_first = group * c_in_per_group;
                    let mut acc = 0.0f64;
                    for ky in 0..k_h {
                        // Row in the padded input. Cannot overflow: it is at
                        // most padded height - 1 (checked by conv_output_size).
                        let py = oy * s_h + ky * d_h;
                        if py < pad.top || py - pad.top >= in_h {
                            continue; // tap in the zero padding
                        }
                        let iy = py - pad.top;
                        for kx in 0..k_w {
                            let px = ox * s_w + kx * d_w;
                            if px < pad.left || px - pad.left >= in_w {
                                continue;
                            }
                            let ix = px - pad.left;
                            let x_row = ((b * in_h + iy) * in_w + ix) * c_in + c_first;
                            for c in 0..c_in_per_group {
                                let xv = x[x_row + c];
                                let wv = w[((oc * c_in_per_group + c) * k_h + ky) * k_w + kx];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    if let Some(bias) = bias {
                        acc += f64::from(bias[oc]);
                    }
                    out[((b * out_h + oy) * out_w + ox) * c_out + oc] = acc as f32;
                }
            }
        }
    }
    Tensor::new(vec![batch, out_h, out_w, c_out], out)
}

/// Gradients of a scalar loss with respect to the three arguments of
/// [`conv2d`], each with the shape of its argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dGrads {
    /// `∂L/∂input`, NHWC like the input.
    pub input: Tensor,
    /// `∂L/∂weight`, `[C_out, C_in / groups, K_h, K_w]` like the weight.
    pub weight: Tensor,
    /// `∂L/∂bias`, `[C_out]` (whether or not the forward pass used a bias).
    pub bias: Tensor,
}

/// Backward pass of [`conv2d`]: given `grad_output = ∂L/∂y` (NHWC, the
/// shape of the forward output), the gradients with respect to the input,
/// the weight and the bias.
///
/// The forward sum is linear in `x` and in `w`, so each tap that
/// contributed `x · w` to `y[b, i, j, o]` sends `δ = ∂L/∂y[b, i, j, o]` back
/// to both factors (with `iy = i*s_h + ky*d_h - top`, `ix = j*s_w + kx*d_w -
/// left` and `g` the group of `o`, as in [`conv2d`]; taps in the padding are
/// skipped):
///
/// ```text
/// ∂L/∂x[b, iy, ix, g*C_in/groups + c] += δ * w[o, c, ky, kx]
/// ∂L/∂w[o, c, ky, kx]                 += δ * x[b, iy, ix, g*C_in/groups + c]
/// ∂L/∂bias[o]                          = Σ_{b, i, j} δ
/// ```
///
/// So `∂L/∂x` is a transposed convolution of `grad_output` with the same
/// weight, and `∂L/∂w` a correlation of the input with `grad_output`. With
/// stride > 1, input pixels that no window reaches (at the bottom or right
/// edge) get gradient 0. Sums are accumulated in f64 and rounded once.
///
/// Errors: everything [`conv2d`] rejects, plus [`Error::Shape`] if
/// `grad_output` is not `[batch, H_out, W_out, C_out]`.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::{Conv2dParams, conv2d_backward};
///
/// // 2x2 image, 1x1 kernel of weight 3: y = 3x, so ∂L/∂x = 3g and ∂L/∂w = Σ g·x.
/// let x = Tensor::new(vec![1, 2, 2, 1], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// let w = Tensor::new(vec![1, 1, 1, 1], vec![3.0]).unwrap();
/// let g = Tensor::new(vec![1, 2, 2, 1], vec![1.0, 0.0, 0.0, 2.0]).unwrap();
/// let grads = conv2d_backward(&x, &w, &g, &Conv2dParams::default()).unwrap();
/// assert_eq!(grads.input.data(), &[3.0, 0.0, 0.0, 6.0]);
/// assert_eq!(grads.weight.data(), &[9.0]); // 1*1 + 2*4
/// assert_eq!(grads.bias.data(), &[3.0]);
/// ```
pub fn conv2d_backward(
    input: &Tensor,
    weight: &Tensor,
    grad_output: &Tensor,
    params: &Conv2dParams,
) -> Result<Conv2dGrads> {
    let geometry = ConvGeometry::check(input, weight, params)?;
    let ConvGeometry {
        batch,
        in_h,
        in_w,
        c_in,
        c_out,
        c_in_per_group,
        c_out_per_group,
        k_h,
        k_w,
        out_h,
        out_w,
    } = geometry;
    let expected = [batch, out_h, out_w, c_out];
    if grad_output.shape() != expected {
        shape_err!(
            "conv2d_backward grad_output must have the forward output's shape {expected:?}, got \
             {:?}",
            grad_output.shape()
        );
    }
    let [s_h, s_w] = params.stride;
    let [d_h, d_w] = params.dilation;
    let pad = params.padding;

    let x = input.data();
    let w = weight.data();
    let gy = grad_output.data();
    let mut gx = vec![0.0f64; x.len()];
    let mut gw = vec![0.0f64; w.len()];
    let mut gb = vec![0.0f64; c_out];

    // The same loop nest as the forward pass, scattering instead of gathering.
    for b in 0..batch {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for oc in 0..c_out {
                    let g = f64::from(gy[((b * out_h + oy) * out_w + ox) * c_out + oc]);
                    gb[oc] += g;
                    let c_first = (oc / c_out_per_group) * c_in_per_group;
                    for ky in 0..k_h {
                        let py = oy * s_h + ky * d_h;
                        if py < pad.top || py - pad.top >= in_h {
                            continue;
                        }
                        let iy = py - pad.top;
                        for kx in 0..k_w {
                            let px = ox * s_w + kx * d_w;
                            if px < pad.left || px - pad.left >= in_w {
                                continue;
                            }
                            let ix = px - pad.left;
                            let x_row = ((b * in_h + iy) * in_w + ix) * c_in + c_first;
                            for c in 0..c_in_per_group {
                                let wi = ((oc * c_in_per_group + c) * k_h + ky) * k_w + kx;
                                gx[x_row + c] += g * f64::from(w[wi]);
                                gw[wi] += g * f64::from(x[x_row + c]);
                            }
                        }
                    }
                }
            }
        }
    }
    let round = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect::<Vec<f32>>();
    Ok(Conv2dGrads {
        input: Tensor::new(input.shape().to_vec(), round(gx))?,
        weight: Tensor::new(weight.shape().to_vec(), round(gw))?,
        bias: Tensor::new(vec![c_out], round(gb))?,
    })
}
