//! ROS image data (raw `sensor_msgs/Image` and `sensor_msgs/CompressedImage`) to model input
//! tensors: region of interest, resize, colour conversion, normalisation.
//!
//! The input structs are plain borrowed views, so the message layer hands its data over
//! without this module knowing any ROS type:
//!
//! ```
//! use nestdnn::model::{Color, InputSpec};
//! use nestdnn::preprocess::{Preprocessor, RawImage, Roi};
//! let spec = InputSpec {
//!     name: "input".into(), layout: "NCHW".into(), channels: 1, color: Color::Gray,
//!     height: 28, width: 28, scale: 1.0 / 255.0, mean: vec![0.286], std: vec![0.353],
//! };
//! let pre = Preprocessor::new(&spec, Some(Roi { x: 80, y: 0, width: 480, height: 480 })).unwrap();
//! let pixels = vec![128u8; 640 * 480 * 3];
//! let frame = RawImage { width: 640, height: 480, encoding: "rgb8", is_bigendian: false,
//!                        step: 640 * 3, data: &pixels };
//! let x: Vec<f32> = pre.raw_to_vec(&frame).unwrap();   // 1 x 28 x 28, NCHW
//! assert_eq!(x.len(), 28 * 28);
//! ```
//!
//! Pipeline: crop the region of interest (clipped to the image), resize it to the model's
//! `width x height` by area averaging (each output pixel is the mean of its block of source
//! pixels, block boundaries as `image::imageops::thumbnail` draws them, mean kept as f32; no
//! aliasing when shrinking; 8-bit frames that shrink take a direct path over the row buffer,
//! everything else goes through `thumbnail`, which interpolates when enlarging), convert the
//! colour (gray =
//! ITU-R BT.601 luma `0.299 R + 0.587 G + 0.114 B`, as OpenCV and PIL; gray to rgb replicates),
//! then `x = (v * scale - mean[c]) / std[c]` with `v` the 8-bit pixel value (16-bit values
//! are mapped to the 8-bit range by `/ 257`). Aspect ratio is not preserved: choose the region
//! of interest with the model's aspect ratio if that matters.
//!
//! Limits: each side at most [`MAX_SIDE`] pixels and at most [`MAX_PIXELS`] pixels in all, for
//! raw frames and decoded compressed frames alike; anything else is a typed error, never a
//! panic.

use std::io::Cursor;

use image::flat::{FlatSamples, SampleLayout};
use image::{
    imageops, DynamicImage, GenericImageView, ImageBuffer, ImageFormat, Luma, Pixel, Rgb, Rgba,
};

use crate::model::{Color, InputSpec};

/// Largest accepted image side, in pixels.
pub const MAX_SIDE: u32 = 16384;
/// Largest accepted image area, in pixels (256 MP).
pub const MAX_PIXELS: u64 = 256 * 1024 * 1024;
/// Largest allocation a compressed-image decoder may make.
pub const MAX_DECODE_BYTES: u64 = 1024 * 1024 * 1024;
/// Most pixels a JPEG may declare per byte of its data. Even a uniform image costs JPEG a few
/// bits per 8x8 block (at most ~250 pixels per byte), so a frame beyond this declares a size
/// its data cannot hold; decoding it would cost time in proportion to the declared size (a
/// 339-byte JPEG declaring 73 MP took 2.5 s, found by fuzzing).
pub const MAX_JPEG_PIXELS_PER_BYTE: u64 = 1024;

/// A raw image, as in `sensor_msgs/Image`.
#[derive(Debug, Clone, Copy)]
pub struct RawImage<'a> {
    /// Columns, pixels.
    pub width: u32,
    /// Rows, pixels.
    pub height: u32,
    /// `rgb8`, `bgr8`, `rgba8`, `bgra8`, `mono8` (or `8UC1`), `mono16` (or `16UC1`).
    pub encoding: &'a str,
    /// Byte order of 16-bit samples.
    pub is_bigendian: bool,
    /// Bytes per row (at least `width * bytes per pixel`).
    pub step: u32,
    /// Pixel rows, at least `step * height` bytes.
    pub data: &'a [u8],
}

/// A compressed image, as in `sensor_msgs/CompressedImage`.
#[derive(Debug, Clone, Copy)]
pub struct CompressedImage<'a> {
    /// `jpeg`, `png`, or image_transport's `"<enc>; jpeg compressed <enc>"` forms; empty means
    /// "detect from the data".
    pub format: &'a str,
    /// The encoded file.
    pub data: &'a [u8],
}

impl<'a> From<&'a crate::msgs::Image> for RawImage<'a> {
    /// A `sensor_msgs/Image`'s pixels, borrowed.
    fn from(m: &'a crate::msgs::Image) -> Self {
        RawImage {
            width: m.width,
            height: m.height,
            encoding: &m.encoding,
            is_bigendian: m.is_bigendian != 0,
            step: m.step,
            data: &m.data,
        }
    }
}

impl<'a> From<&'a crate::msgs::CompressedImage> for CompressedImage<'a> {
    /// A `sensor_msgs/CompressedImage`'s file, borrowed.
    fn from(m: &'a crate::msgs::CompressedImage) -> Self {
        CompressedImage {
            format: &m.format,
            data: &m.data,
        }
    }
}

/// Region of interest in pixels. A zero `width` or `height` extends to the image edge (so
/// all zeros is the whole image, as in `sensor_msgs/RegionOfInterest`); a region reaching past
/// the image is clipped to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Roi {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Columns (0 = to the right edge).
    pub width: u32,
    /// Rows (0 = to the bottom edge).
    pub height: u32,
}

/// Why a frame could not be turned into a model input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PreprocessError {
    /// The encoding is not one of the supported ones.
    #[error("unsupported encoding {encoding:?} (supported: rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, mono16, 16UC1)")]
    UnknownEncoding {
        /// The encoding given.
        encoding: String,
    },
    /// Width or height is zero.
    #[error("image is {width}x{height}: width and height must be > 0")]
    ZeroSize {
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
    /// Width, height or area beyond the limits.
    #[error("image is {width}x{height}: the limit is {MAX_SIDE} per side and {MAX_PIXELS} pixels")]
    TooLarge {
        /// Columns.
        width: u64,
        /// Rows.
        height: u64,
    },
    /// A compressed frame declares far more pixels than its data can hold.
    #[error("{format} declares {width}x{height} pixels in {bytes} bytes (more than {per_byte} pixels per byte): not a real frame")]
    Implausible {
        /// `jpeg`.
        format: &'static str,
        /// Declared columns.
        width: u32,
        /// Declared rows.
        height: u32,
        /// Bytes of data.
        bytes: usize,
        /// The limit, pixels per byte.
        per_byte: u64,
    },
    /// `step` is smaller than a row of pixels.
    #[error("step {step} is smaller than width x bytes per pixel = {min}")]
    StepTooSmall {
        /// Bytes per row given.
        step: u32,
        /// Bytes one row of pixels needs.
        min: u64,
    },
    /// `data` is shorter than `step * height`.
    #[error("data has {len} bytes, step x height needs {need}")]
    DataTooShort {
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: u64,
    },
    /// The region of interest starts outside the image.
    #[error("region of interest {roi:?} starts outside the {width}x{height} image")]
    RoiOutside {
        /// The region.
        roi: Roi,
        /// Image columns.
        width: u32,
        /// Image rows.
        height: u32,
    },
    /// The compressed format is not jpeg or png.
    #[error("unsupported compressed format {format:?} (supported: jpeg, png)")]
    UnknownFormat {
        /// The format string given.
        format: String,
    },
    /// The compressed data could not be decoded.
    #[error("cannot decode {format} data: {reason}")]
    Decode {
        /// `jpeg` or `png`.
        format: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The output buffer has the wrong length.
    #[error("output buffer has {got} values, the model input needs {expected}")]
    OutputLength {
        /// `C*H*W`.
        expected: usize,
        /// Given.
        got: usize,
    },
    /// The input spec cannot be served (validated manifests never hit this).
    #[error("invalid input spec: {what}")]
    InvalidSpec {
        /// What is wrong.
        what: String,
    },
}

impl PreprocessError {
    /// A short name of the error's kind (one per variant: `unknown_encoding`, `zero_size`,
    /// `too_large`, `step_too_small`, `data_too_short`, `roi_outside`, `unknown_format`,
    /// `decode`, `output_length`, `invalid_spec`), e.g. to throttle logs per kind.
    pub fn kind(&self) -> &'static str {
        match self {
            PreprocessError::UnknownEncoding { .. } => "unknown_encoding",
            PreprocessError::ZeroSize { .. } => "zero_size",
            PreprocessError::TooLarge { .. } => "too_large",
            PreprocessError::Implausible { .. } => "implausible_size",
            PreprocessError::StepTooSmall { .. } => "step_too_small",
            PreprocessError::DataTooShort { .. } => "data_too_short",
            PreprocessError::RoiOutside { .. } => "roi_outside",
            PreprocessError::UnknownFormat { .. } => "unknown_format",
            PreprocessError::Decode { .. } => "decode",
            PreprocessError::OutputLength { .. } => "output_length",
            PreprocessError::InvalidSpec { .. } => "invalid_spec",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Gray,
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Mono8,
    Mono16,
    Rgb8,
    Bgr8,
    Rgba8,
    Bgra8,
}

impl Encoding {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mono8" | "8UC1" => Encoding::Mono8,
            "mono16" | "16UC1" => Encoding::Mono16,
            "rgb8" => Encoding::Rgb8,
            "bgr8" => Encoding::Bgr8,
            "rgba8" => Encoding::Rgba8,
            "bgra8" => Encoding::Bgra8,
            _ => return None,
        })
    }

    fn bytes_per_pixel(self) -> u64 {
        match self {
            Encoding::Mono8 => 1,
            Encoding::Mono16 => 2,
            Encoding::Rgb8 | Encoding::Bgr8 => 3,
            Encoding::Rgba8 | Encoding::Bgra8 => 4,
        }
    }
}

fn check_dims(width: u32, height: u32) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::ZeroSize { width, height });
    }
    if width > MAX_SIDE || height > MAX_SIDE || width as u64 * height as u64 > MAX_PIXELS {
        return Err(PreprocessError::TooLarge {
            width: width as u64,
            height: height as u64,
        });
    }
    Ok(())
}

/// One frame's model input ([`Preprocessor::raw_input`], [`Preprocessor::compressed_input`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// `C * H * W` values, NCHW.
    pub tensor: Vec<f32>,
    /// The region of interest reached past the image and was clipped to it.
    pub roi_clipped: bool,
}

/// Turns frames into one model's input; cheap to clone, no interior state.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    color: Color,
    width: u32,
    height: u32,
    roi: Option<Roi>,
    /// `x = v * gain[c] + offset[c]`.
    gain: [f32; 3],
    offset: [f32; 3],
}

impl Preprocessor {
    /// A pre-processor for a model input `spec` (from the manifest) and an optional region of
    /// interest.
    ///
    /// # Errors
    /// [`PreprocessError::InvalidSpec`] if the spec is inconsistent (a validated manifest's
    /// spec never is).
    pub fn new(spec: &InputSpec, roi: Option<Roi>) -> Result<Self, PreprocessError> {
        let bad = |what: String| Err(PreprocessError::InvalidSpec { what });
        let channels = match spec.color {
            Color::Gray => 1,
            Color::Rgb => 3,
        };
        if spec.channels != channels || spec.mean.len() != channels || spec.std.len() != channels {
            return bad(format!(
                "color {:?} needs {channels} channel(s) and as many mean/std values",
                spec.color
            ));
        }
        if spec.width == 0
            || spec.height == 0
            || spec.width > MAX_SIDE as usize
            || spec.height > MAX_SIDE as usize
        {
            return bad(format!("input size {}x{}", spec.width, spec.height));
        }
        let mut gain = [0.0; 3];
        let mut offset = [0.0; 3];
        for c in 0..channels {
            let (m, s) = (spec.mean[c], spec.std[c]);
            if !(s.is_finite() && s > 0.0 && m.is_finite() && spec.scale.is_finite()) {
                return bad(format!("mean {m} / std {s} / scale {}", spec.scale));
            }
            gain[c] = spec.scale / s;
            offset[c] = -m / s;
        }
        Ok(Preprocessor {
            color: spec.color,
            width: spec.width as u32,
            height: spec.height as u32,
            roi,
            gain,
            offset,
        })
    }

    /// Number of f32 values one output holds (`C * H * W`).
    pub fn output_len(&self) -> usize {
        self.channels() * self.width as usize * self.height as usize
    }

    fn channels(&self) -> usize {
        match self.color {
            Color::Gray => 1,
            Color::Rgb => 3,
        }
    }

    /// The region of interest, if any.
    pub fn roi(&self) -> Option<Roi> {
        self.roi
    }

    /// True if the region of interest reaches past an image of `width x height` (it is then
    /// clipped, and the model sees less than the configured region: usually a wrong ROI or
    /// camera resolution). False without a ROI, or when it starts outside the image (that is
    /// an error of its own).
    pub fn roi_clipped(&self, width: u32, height: u32) -> bool {
        self.roi.is_some_and(|r| {
            r.x < width
                && r.y < height
                && ((r.width != 0 && u64::from(r.x) + u64::from(r.width) > u64::from(width))
                    || (r.height != 0 && u64::from(r.y) + u64::from(r.height) > u64::from(height)))
        })
    }

    /// Clipped region `(x, y, w, h)` of an image of `width x height`.
    fn region(&self, width: u32, height: u32) -> Result<(u32, u32, u32, u32), PreprocessError> {
        let Some(roi) = self.roi else {
            return Ok((0, 0, width, height));
        };
        if roi.x >= width || roi.y >= height {
            return Err(PreprocessError::RoiOutside { roi, width, height });
        }
        let w = if roi.width == 0 {
            width - roi.x
        } else {
            roi.width.min(width - roi.x)
        };
        let h = if roi.height == 0 {
            height - roi.y
        } else {
            roi.height.min(height - roi.y)
        };
        Ok((roi.x, roi.y, w, h))
    }

    /// Converts a raw frame into `out` (`output_len()` values, NCHW).
    ///
    /// # Errors
    /// [`PreprocessError`] for unsupported encodings, bad sizes, short data, a region of
    /// interest outside the image or a wrong `out` length.
    pub fn raw(&self, img: &RawImage<'_>, out: &mut [f32]) -> Result<(), PreprocessError> {
        self.check_out(out)?;
        let enc =
            Encoding::parse(img.encoding).ok_or_else(|| PreprocessError::UnknownEncoding {
                encoding: img.encoding.to_string(),
            })?;
        check_dims(img.width, img.height)?;
        let min = img.width as u64 * enc.bytes_per_pixel();
        if (img.step as u64) < min {
            return Err(PreprocessError::StepTooSmall {
                step: img.step,
                min,
            });
        }
        let need = img.step as u64 * img.height as u64;
        if (img.data.len() as u64) < need {
            return Err(PreprocessError::DataTooShort {
                len: img.data.len(),
                need,
            });
        }
        let region = self.region(img.width, img.height)?;
        let data = &img.data[..need as usize];
        let dims = (img.width, img.height, img.step as usize);
        match enc {
            Encoding::Mono8 => self.frame_u8::<1>(data, dims, region, Order::Gray, out),
            Encoding::Rgb8 => self.frame_u8::<3>(data, dims, region, Order::Rgb, out),
            Encoding::Bgr8 => self.frame_u8::<3>(data, dims, region, Order::Bgr, out),
            Encoding::Rgba8 => self.frame_u8::<4>(data, dims, region, Order::Rgb, out),
            Encoding::Bgra8 => self.frame_u8::<4>(data, dims, region, Order::Bgr, out),
            Encoding::Mono16 => {
                let (x, y, w, h) = region;
                let mut px = Vec::with_capacity(w as usize * h as usize);
                for row in y..y + h {
                    let start = row as usize * img.step as usize + x as usize * 2;
                    let bytes = &data[start..start + w as usize * 2];
                    px.extend(bytes.chunks_exact(2).map(|b| {
                        if img.is_bigendian {
                            u16::from_be_bytes([b[0], b[1]])
                        } else {
                            u16::from_le_bytes([b[0], b[1]])
                        }
                    }));
                }
                let buf: ImageBuffer<Luma<u16>, Vec<u16>> =
                    ImageBuffer::from_raw(w, h, px).ok_or(PreprocessError::TooLarge {
                        width: w as u64,
                        height: h as u64,
                    })?;
                self.crop_resize_16(&buf, (0, 0, w, h), out);
                Ok(())
            }
        }
    }

    /// Like [`Preprocessor::raw`], returning a new vector.
    ///
    /// # Errors
    /// As [`Preprocessor::raw`].
    pub fn raw_to_vec(&self, img: &RawImage<'_>) -> Result<Vec<f32>, PreprocessError> {
        let mut out = vec![0.0; self.output_len()];
        self.raw(img, &mut out)?;
        Ok(out)
    }

    /// Decodes a compressed frame (jpeg or png) into `out`.
    ///
    /// # Errors
    /// [`PreprocessError::UnknownFormat`], [`PreprocessError::Decode`], size limits, a region
    /// of interest outside the image, a wrong `out` length.
    pub fn compressed(
        &self,
        img: &CompressedImage<'_>,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        self.decode_into(img, out).map(|_| ())
    }

    /// [`Preprocessor::compressed`], returning the decoded image's width and height.
    fn decode_into(
        &self,
        img: &CompressedImage<'_>,
        out: &mut [f32],
    ) -> Result<(u32, u32), PreprocessError> {
        self.check_out(out)?;
        let f = img.format.to_ascii_lowercase();
        let format = if f.contains("compresseddepth") {
            return Err(PreprocessError::UnknownFormat {
                format: img.format.to_string(),
            });
        } else if f.contains("png") {
            ImageFormat::Png
        } else if f.contains("jpeg") || f.contains("jpg") {
            ImageFormat::Jpeg
        } else if f.trim().is_empty() {
            match image::guess_format(img.data) {
                Ok(g @ (ImageFormat::Png | ImageFormat::Jpeg)) => g,
                _ => {
                    return Err(PreprocessError::UnknownFormat {
                        format: img.format.to_string(),
                    })
                }
            }
        } else {
            return Err(PreprocessError::UnknownFormat {
                format: img.format.to_string(),
            });
        };
        let name = if format == ImageFormat::Png {
            "png"
        } else {
            "jpeg"
        };
        let decode_err = |e: image::ImageError| PreprocessError::Decode {
            format: name,
            reason: e.to_string(),
        };
        if format == ImageFormat::Jpeg {
            // The header alone: reject a declared size the data cannot hold before decoding.
            let dims = std::panic::catch_unwind(|| {
                image::ImageReader::with_format(Cursor::new(img.data), format).into_dimensions()
            })
            .map_err(|_| PreprocessError::Decode {
                format: name,
                reason: "the decoder panicked on the header".into(),
            })?
            .map_err(decode_err)?;
            let (w, h) = dims;
            if u64::from(w) * u64::from(h) > img.data.len() as u64 * MAX_JPEG_PIXELS_PER_BYTE {
                return Err(PreprocessError::Implausible {
                    format: name,
                    width: w,
                    height: h,
                    bytes: img.data.len(),
                    per_byte: MAX_JPEG_PIXELS_PER_BYTE,
                });
            }
        }
        let mut reader = image::ImageReader::with_format(Cursor::new(img.data), format);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        // The decoders are third-party code run on outside data, and zune-jpeg 0.5 asserts on
        // some malformed JPEGs (found by the `preprocess` fuzz target; regression test in
        // tests/fuzz_regressions.rs): a panic while decoding is a decode error too.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
            .map_err(|p| PreprocessError::Decode {
                format: name,
                reason: format!(
                    "decoder failed: {}",
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default()
                ),
            })?
            .map_err(decode_err)?;
        let dims = (decoded.width(), decoded.height());
        check_dims(dims.0, dims.1)?;
        let region = self.region(dims.0, dims.1)?;
        match decoded {
            DynamicImage::ImageLuma8(b) => self.packed_u8::<1, _>(&b, Order::Gray, region, out),
            DynamicImage::ImageRgb8(b) => self.packed_u8::<3, _>(&b, Order::Rgb, region, out),
            DynamicImage::ImageRgba8(b) => self.packed_u8::<4, _>(&b, Order::Rgb, region, out),
            DynamicImage::ImageLuma16(b) => {
                self.crop_resize_16(&b, region, out);
                Ok(())
            }
            DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLumaA16(_) => {
                let b = decoded.to_luma8();
                self.packed_u8::<1, _>(&b, Order::Gray, region, out)
            }
            other => {
                let b = other.to_rgb8();
                self.packed_u8::<3, _>(&b, Order::Rgb, region, out)
            }
        }?;
        Ok(dims)
    }

    /// Like [`Preprocessor::compressed`], returning a new vector.
    ///
    /// # Errors
    /// As [`Preprocessor::compressed`].
    pub fn compressed_to_vec(
        &self,
        img: &CompressedImage<'_>,
    ) -> Result<Vec<f32>, PreprocessError> {
        let mut out = vec![0.0; self.output_len()];
        self.compressed(img, &mut out)?;
        Ok(out)
    }

    /// A raw frame's model input, and whether the region of interest was clipped to the image.
    ///
    /// # Errors
    /// As [`Preprocessor::raw`].
    pub fn raw_input(&self, img: &RawImage<'_>) -> Result<Input, PreprocessError> {
        Ok(Input {
            tensor: self.raw_to_vec(img)?,
            roi_clipped: self.roi_clipped(img.width, img.height),
        })
    }

    /// A compressed frame's model input, and whether the region of interest was clipped to the
    /// decoded image.
    ///
    /// # Errors
    /// As [`Preprocessor::compressed`].
    pub fn compressed_input(&self, img: &CompressedImage<'_>) -> Result<Input, PreprocessError> {
        let mut tensor = vec![0.0; self.output_len()];
        let (w, h) = self.decode_into(img, &mut tensor)?;
        Ok(Input {
            tensor,
            roi_clipped: self.roi_clipped(w, h),
        })
    }

    fn check_out(&self, out: &[f32]) -> Result<(), PreprocessError> {
        if out.len() != self.output_len() {
            return Err(PreprocessError::OutputLength {
                expected: self.output_len(),
                got: out.len(),
            });
        }
        Ok(())
    }

    /// A decoded, packed 8-bit image buffer.
    fn packed_u8<const BPP: usize, P: Pixel<Subpixel = u8>>(
        &self,
        b: &ImageBuffer<P, Vec<u8>>,
        order: Order,
        region: (u32, u32, u32, u32),
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let (width, height) = b.dimensions();
        self.frame_u8::<BPP>(
            b.as_raw(),
            (width, height, width as usize * BPP),
            region,
            order,
            out,
        )
    }

    fn crop_resize<I, P>(
        &self,
        img: &I,
        (x, y, w, h): (u32, u32, u32, u32),
        order: Order,
        out: &mut [f32],
    ) where
        I: GenericImageView<Pixel = P>,
        P: Pixel<Subpixel = u8> + 'static,
    {
        let sub = imageops::crop_imm(img, x, y, w, h);
        if (w, h) == (self.width, self.height) {
            self.finish(&*sub, order, 1.0, out);
        } else {
            let small = imageops::thumbnail(&*sub, self.width, self.height);
            self.finish(&small, order, 1.0, out);
        }
    }

    fn crop_resize_16<I>(&self, img: &I, (x, y, w, h): (u32, u32, u32, u32), out: &mut [f32])
    where
        I: GenericImageView<Pixel = Luma<u16>>,
    {
        const UNIT: f32 = 1.0 / 257.0;
        let sub = imageops::crop_imm(img, x, y, w, h);
        if (w, h) == (self.width, self.height) {
            self.finish(&*sub, Order::Gray, UNIT, out);
        } else {
            let small = imageops::thumbnail(&*sub, self.width, self.height);
            self.finish(&small, Order::Gray, UNIT, out);
        }
    }

    /// Colour conversion and normalisation of an image already at the model's size.
    fn finish<I>(&self, img: &I, order: Order, unit: f32, out: &mut [f32])
    where
        I: GenericImageView,
        <I::Pixel as Pixel>::Subpixel: Into<f32>,
    {
        for (x, y, p) in img.pixels() {
            let c = p.channels();
            let v = |k: usize| -> f32 { c.get(k).map_or(0.0, |s| (*s).into()) * unit };
            let i = y as usize * self.width as usize + x as usize;
            self.put(out, i, [v(0), v(1), v(2)], order);
        }
    }

    /// Writes output pixel `i` from source channel values `px` (8-bit scale, in `order`).
    #[inline]
    fn put(&self, out: &mut [f32], i: usize, px: [f32; 3], order: Order) {
        let plane = self.width as usize * self.height as usize;
        let (r, g, b) = match order {
            Order::Bgr => (px[2], px[1], px[0]),
            _ => (px[0], px[1], px[2]),
        };
        match (self.color, order) {
            (Color::Gray, Order::Gray) => out[i] = px[0] * self.gain[0] + self.offset[0],
            (Color::Gray, _) => {
                let l = 0.299 * r + 0.587 * g + 0.114 * b;
                out[i] = l * self.gain[0] + self.offset[0];
            }
            (Color::Rgb, Order::Gray) => {
                for k in 0..3 {
                    out[k * plane + i] = px[0] * self.gain[k] + self.offset[k];
                }
            }
            (Color::Rgb, _) => {
                for (k, v) in [r, g, b].into_iter().enumerate() {
                    out[k * plane + i] = v * self.gain[k] + self.offset[k];
                }
            }
        }
    }

    /// 8-bit frames (`BPP` bytes per pixel, rows `step` bytes apart): area averaging when the
    /// region shrinks in both directions, `image::imageops::thumbnail` otherwise.
    fn frame_u8<const BPP: usize>(
        &self,
        data: &[u8],
        (width, height, step): (u32, u32, usize),
        region: (u32, u32, u32, u32),
        order: Order,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let (_, _, w, h) = region;
        if w >= self.width && h >= self.height {
            self.area_average::<BPP>(data, step, region, order, out);
            return Ok(());
        }
        let flat = FlatSamples {
            samples: data,
            layout: SampleLayout {
                channels: BPP as u8,
                channel_stride: 1,
                width,
                width_stride: BPP,
                height,
                height_stride: step,
            },
            color_hint: None,
        };
        let too_short = || PreprocessError::DataTooShort {
            len: data.len(),
            need: step as u64 * height as u64,
        };
        // Sizes were checked by the caller; `as_view` checks again that every pixel is in `data`.
        match BPP {
            1 => self.crop_resize(
                &flat.as_view::<Luma<u8>>().map_err(|_| too_short())?,
                region,
                order,
                out,
            ),
            3 => self.crop_resize(
                &flat.as_view::<Rgb<u8>>().map_err(|_| too_short())?,
                region,
                order,
                out,
            ),
            _ => self.crop_resize(
                &flat.as_view::<Rgba<u8>>().map_err(|_| too_short())?,
                region,
                order,
                out,
            ),
        }
        Ok(())
    }

    /// Box filter from a region at least as large as the output in both directions: each
    /// output pixel is the mean of its block of source pixels.
    /// Block boundaries are those of `image::imageops::thumbnail` (which rounds the mean to
    /// an integer; this keeps it as f32). The caller guarantees that every row of the region
    /// lies inside `data`.
    fn area_average<const BPP: usize>(
        &self,
        data: &[u8],
        step: usize,
        (x, y, w, h): (u32, u32, u32, u32),
        order: Order,
        out: &mut [f32],
    ) {
        const NC: usize = 3;
        let (tw, th) = (self.width as usize, self.height as usize);
        let cols = block_bounds(w, self.width);
        let rows = block_bounds(h, self.height);
        let used = BPP.min(NC);
        let rw = w as usize * BPP;
        // Column sums over a block's rows (a block has at most MAX_SIDE rows of value 255, so
        // u32 cannot overflow), then per block over its columns.
        let mut colsum = vec![0u32; rw];
        for (oy, &(r0, r1)) in rows.iter().enumerate() {
            colsum.iter_mut().for_each(|a| *a = 0);
            for r in r0..r1 {
                let start = (y as usize + r) * step + x as usize * BPP;
                let Some(row) = data.get(start..start + rw) else {
                    continue;
                };
                for (a, v) in colsum.iter_mut().zip(row) {
                    *a += *v as u32;
                }
            }
            // Blocks may overlap by a pixel where f32 rounding says so, as in `thumbnail`.
            for (ox, &(c0, c1)) in cols.iter().enumerate() {
                let mut sum = [0u64; NC];
                for px in colsum[c0 * BPP..c1 * BPP].chunks_exact(BPP) {
                    for (s, v) in sum.iter_mut().zip(&px[..used]) {
                        *s += *v as u64;
                    }
                }
                let n = ((r1 - r0) * (c1 - c0)).max(1) as f32;
                let px = [sum[0] as f32 / n, sum[1] as f32 / n, sum[2] as f32 / n];
                self.put(out, oy * tw + ox, px, order);
            }
        }
        debug_assert_eq!(rows.len(), th);
    }
}

/// `thumbnail`'s block boundaries: output index `o` of `t` covers source `[a, b)` of `n`.
fn block_bounds(n: u32, t: u32) -> Vec<(usize, usize)> {
    let ratio = n as f32 / t as f32;
    (0..t)
        .map(|o| {
            let lo_f = o as f32 * ratio;
            let lo = (lo_f.ceil() as u32).clamp(0, n - 1);
            let hi = ((lo_f + ratio).ceil() as u32).clamp(lo, n);
            (lo as usize, hi as usize)
        })
        .collect()
}
