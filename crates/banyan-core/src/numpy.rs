//! msgpack-numpy payloads as python-banyan's `monitor -m True` shows them.
//!
//! A component created with `numpy=True` sends an array as a map with bin
//! keys: `{b'nd': True, b'type': '<i8', b'kind': b'', b'shape': [3],
//! b'data': <bytes>}`, and a numpy scalar as `{b'nd': False, b'type': '<i8',
//! b'data': <bytes>}`. python's monitor decodes them with msgpack-numpy and
//! prints numpy's `repr` (numpy 2.x, default print options): `array([1, 2,
//! 3])`, `array([[1.5, 2.5],\n       [3.5, 4.5]])`, `array([1, 2],
//! dtype=int32)`, `np.float32(0.1)`. [`write_numpy`] writes the same text for
//! the dtypes it knows: bool, signed and unsigned integers of 1, 2, 4 and 8
//! bytes and floats of 4 and 8 bytes, in either byte order, any shape (up to
//! numpy's 64 dimensions), with numpy's alignment, line wrapping at 75
//! columns and summary (`...`) beyond 1,000 elements.
//!
//! Other arrays are shown as the plain map, where python would differ:
//! complex, float16 and float128, strings, datetimes and structured dtypes
//! (python decodes them), object arrays (`b'kind': b'O'`, which python
//! *unpickles*, running whatever code the peer sent: we never do), and maps
//! numpy would refuse (data shorter than the shape needs, a bad dtype),
//! on which python's monitor dies.

use std::fmt::Write as _;

use rmpv::Value;

use crate::pyrepr;

/// numpy's default `linewidth`.
const LINE_WIDTH: usize = 75;
/// numpy's default `threshold`: larger arrays are summarized.
const THRESHOLD: usize = 1000;
/// numpy's default `edgeitems`: what a summary keeps of each end.
const EDGE_ITEMS: usize = 3;
/// numpy's default `precision` for floats.
const PRECISION: usize = 8;
/// numpy's `NPY_MAXDIMS`.
const MAX_DIMS: usize = 64;

/// A msgpack-numpy value this module decodes.
pub(crate) enum Numpy<'a> {
    /// `{b'nd': True, ...}`: an array.
    Array(Array<'a>),
    /// `{b'nd': False, ...}`: a numpy scalar, `np.frombuffer(data, dtype)[0]`.
    Scalar(Dtype, Element),
}

impl<'a> Numpy<'a> {
    /// Decodes `value` as msgpack-numpy's `decode` would, or `None` when it
    /// is not one this module shows (see the module docs).
    pub(crate) fn parse(value: &'a Value) -> Option<Numpy<'a>> {
        let Value::Map(entries) = value else {
            return None;
        };
        // The dict python builds: the last of repeated keys counts.
        let field = |name: &[u8]| {
            pyrepr::dict_entries(entries)
                .filter(|(k, _)| matches!(k, Value::Binary(b) if b == name))
                .last()
                .map(|(_, v)| v)
        };
        let (Some(nd), Some(Value::String(type_text)), Some(Value::Binary(data))) =
            (field(b"nd"), field(b"type"), field(b"data"))
        else {
            return None;
        };
        let type_text = type_text.as_str()?;
        let dtype = Dtype::parse(type_text)?;
        match nd {
            Value::Boolean(true) => {
                let object_or_structured = field(b"kind")
                    .is_some_and(|k| matches!(k, Value::Binary(b) if b == b"V" || b == b"O"));
                let Some(Value::Array(dims)) = field(b"shape") else {
                    return None;
                };
                let shape = dims
                    .iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<usize>>>()?;
                let size = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d))?;
                // numpy reads the first `size` elements of a longer buffer.
                let fits = size
                    .checked_mul(dtype.size)
                    .is_some_and(|n| n <= data.len());
                (!object_or_structured && fits && shape.len() <= MAX_DIMS).then_some(Numpy::Array(
                    Array {
                        type_text,
                        dtype,
                        shape,
                        data,
                        size,
                    },
                ))
            }
            Value::Boolean(false) => (data.len() >= dtype.size && data.len() % dtype.size == 0)
                .then(|| Numpy::Scalar(dtype, dtype.element(data, 0))),
            _ => None,
        }
    }

    /// numpy's `repr`: `array([1, 2, 3])`, `np.int64(5)`.
    pub(crate) fn write_repr(&self, out: &mut String) {
        match self {
            Numpy::Array(array) => array.write_repr(out),
            Numpy::Scalar(_, Element::Bool(b)) => {
                out.push_str(if *b { "np.True_" } else { "np.False_" })
            }
            Numpy::Scalar(dtype, element) => {
                let _ = write!(out, "np.{}(", dtype.name());
                write_scalar(*element, out);
                out.push(')');
            }
        }
    }

    /// Our JSON-like form: `ndarray(<i8, shape [3]) [1, 2, 3]`, a scalar as
    /// its number.
    pub(crate) fn write_display(&self, out: &mut String) {
        match self {
            Numpy::Array(array) => {
                let _ = write!(
                    out,
                    "ndarray({}, shape {:?}) ",
                    array.type_text, array.shape
                );
                if array.size == 0 {
                    // Not one bracket per row of a shape such as [2^40, 0]:
                    // a peer's few bytes must not make endless text.
                    out.push_str("[]");
                    return;
                }
                let mut index = Vec::with_capacity(array.shape.len());
                array.write_nested(&mut index, out);
            }
            Numpy::Scalar(_, element) => write_json_element(*element, out),
        }
    }
}

/// Writes numpy's `repr` of `value` to `out` and returns true if it is a
/// msgpack-numpy array or scalar this module shows.
pub(crate) fn write_numpy(value: &Value, out: &mut String) -> bool {
    match Numpy::parse(value) {
        Some(numpy) => {
            numpy.write_repr(out);
            true
        }
        None => false,
    }
}

/// An element as JSON writes a number (`true` for a bool, `NaN`).
fn write_json_element(element: Element, out: &mut String) {
    match element {
        Element::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Element::F64(f) if !f.is_finite() => {
            let _ = crate::json::to_json(&Value::F64(f)).map(|t| out.push_str(&t));
        }
        Element::F32(f) if !f.is_finite() => {
            let _ = crate::json::to_json(&Value::F32(f)).map(|t| out.push_str(&t));
        }
        other => write_scalar(other, out),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int,
    Uint,
    Float,
}

/// A numpy dtype this module decodes: kind, size in bytes, byte order.
#[derive(Clone, Copy)]
pub(crate) struct Dtype {
    kind: Kind,
    size: usize,
    big_endian: bool,
    /// As written (`'>i8'`), for the repr of a dtype that is not native.
    native: bool,
}

impl Dtype {
    /// Parses an array-protocol type string such as `<i8`, `|b1`, `>f4`.
    fn parse(text: &str) -> Option<Dtype> {
        let (order, rest) = match text.as_bytes().first()? {
            b'<' | b'>' | b'|' | b'=' => text.split_at_checked(1)?,
            _ => ("=", text),
        };
        let mut chars = rest.chars();
        let kind = match chars.next()? {
            'b' => Kind::Bool,
            'i' => Kind::Int,
            'u' => Kind::Uint,
            'f' => Kind::Float,
            _ => return None,
        };
        let size: usize = chars.as_str().parse().ok()?;
        let valid = match kind {
            Kind::Bool => size == 1,
            Kind::Int | Kind::Uint => matches!(size, 1 | 2 | 4 | 8),
            Kind::Float => matches!(size, 4 | 8),
        };
        if !valid {
            return None;
        }
        let big_endian = order == ">" || (order == "=" && cfg!(target_endian = "big"));
        let native =
            size == 1 || order == "=" || order == "|" || big_endian == cfg!(target_endian = "big");
        Some(Dtype {
            kind,
            size,
            big_endian,
            native,
        })
    }

    /// numpy's type name: `int64`, `uint8`, `float32`, `bool`.
    fn name(&self) -> String {
        match self.kind {
            Kind::Bool => "bool".to_owned(),
            Kind::Int => format!("int{}", self.size * 8),
            Kind::Uint => format!("uint{}", self.size * 8),
            Kind::Float => format!("float{}", self.size * 8),
        }
    }

    /// What `dtype=` shows in a repr: the name, or the quoted type string
    /// for a byte order that is not this machine's.
    fn short_repr(&self) -> String {
        if self.native {
            return self.name();
        }
        let code = match self.kind {
            Kind::Bool => 'b',
            Kind::Int => 'i',
            Kind::Uint => 'u',
            Kind::Float => 'f',
        };
        let order = if self.big_endian { '>' } else { '<' };
        format!("'{order}{code}{}'", self.size)
    }

    /// Whether numpy's repr leaves the dtype out (`int64`, `float64` and
    /// `bool` in this machine's byte order).
    fn implied(&self) -> bool {
        self.native
            && matches!(
                (self.kind, self.size),
                (Kind::Bool, 1) | (Kind::Int, 8) | (Kind::Float, 8)
            )
    }

    /// Element `i` of `data`, which the caller has checked is long enough.
    fn element(&self, data: &[u8], i: usize) -> Element {
        let mut raw = [0u8; 8];
        let start = i * self.size;
        if let (Some(bytes), Some(slot)) =
            (data.get(start..start + self.size), raw.get_mut(..self.size))
        {
            slot.copy_from_slice(bytes);
            if self.big_endian {
                slot.reverse();
            }
        }
        let bits = u64::from_le_bytes(raw);
        let shift = 64 - 8 * self.size as u32;
        match (self.kind, self.size) {
            (Kind::Bool, _) => Element::Bool(bits != 0),
            (Kind::Int, _) => Element::Int(((bits << shift) as i64) >> shift),
            (Kind::Uint, _) => Element::Uint(bits),
            (Kind::Float, 4) => Element::F32(f32::from_bits(bits as u32)),
            _ => Element::F64(f64::from_bits(bits)),
        }
    }
}

/// One element of an array, decoded.
#[derive(Clone, Copy)]
pub(crate) enum Element {
    Bool(bool),
    Int(i64),
    Uint(u64),
    F32(f32),
    F64(f64),
}

impl Element {
    /// The value as a double, for the float format's decisions.
    fn as_f64(self) -> f64 {
        match self {
            Element::F32(f) => f64::from(f),
            Element::F64(f) => f,
            _ => 0.0,
        }
    }
}

/// A numpy scalar's value as its repr shows it: python's float repr of the
/// value in its own precision.
fn write_scalar(element: Element, out: &mut String) {
    match element {
        Element::Bool(b) => out.push_str(if b { "True" } else { "False" }),
        Element::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Element::Uint(u) => {
            let _ = write!(out, "{u}");
        }
        Element::F64(f) => pyrepr::write_float_repr(f, out),
        Element::F32(f) => {
            if f.is_finite() {
                layout_python(&Digits::of_f32(f), out);
            } else {
                pyrepr::write_float_repr(f64::from(f), out);
            }
        }
    }
}

/// The shortest digits that read back as a float of its own width, and
/// where the decimal point goes: `value = 0.DIGITS × 10^point`.
struct Digits {
    negative: bool,
    digits: String,
    point: i32,
}

impl Digits {
    fn parse(text: &str, negative: bool) -> Digits {
        let text = text.trim_start_matches('-');
        let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
        Digits {
            negative,
            digits: mantissa.chars().filter(|c| *c != '.').collect(),
            point: exponent.parse::<i32>().unwrap_or(0) + 1,
        }
    }

    /// Shortest digits of a float32; of two equally short, the even one
    /// (numpy's Dragon4 rounds half to even, Rust's shortest rounds up).
    fn of_f32(f: f32) -> Digits {
        let shortest = format!("{f:e}");
        let significant = Digits::parse(&shortest, false).digits.len();
        let rounded = format!("{f:.*e}", significant.saturating_sub(1));
        let text = if rounded != shortest && rounded.parse::<f32>() == Ok(f) {
            rounded
        } else {
            shortest
        };
        Digits::parse(&text, f.is_sign_negative())
    }

    fn of_f64(f: f64) -> Digits {
        let (negative, digits, point) = pyrepr::shortest_digits(f);
        Digits {
            negative,
            digits,
            point,
        }
    }
}

/// python's repr layout (fixed from 1e-4 to 1e16, else exponent) of digits.
fn layout_python(d: &Digits, out: &mut String) {
    crate::pyrepr::write_layout(d.negative, &d.digits, d.point, out);
}

/// One decoded msgpack-numpy array.
pub(crate) struct Array<'a> {
    /// The type string as sent (`<i8`).
    type_text: &'a str,
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
    size: usize,
}

impl Array<'_> {
    /// numpy's `array_repr` with default print options.
    fn write_repr(&self, out: &mut String) {
        let prefix = "array(";
        let summarize = self.size > THRESHOLD;
        let body = if self.size == 0 {
            "[]".to_owned()
        } else {
            let format = Format::new(self, summarize);
            let mut next_line_prefix = " ".to_owned();
            next_line_prefix.push_str(&" ".repeat(prefix.len()));
            self.format_array(&format, &next_line_prefix, summarize)
        };
        let mut extras = Vec::new();
        if (self.size == 0 && self.shape != [0]) || summarize {
            extras.push(format!("shape={}", shape_repr(&self.shape)));
        }
        if !self.dtype.implied() || self.size == 0 {
            extras.push(format!("dtype={}", self.dtype.short_repr()));
        }
        if extras.is_empty() {
            out.push_str(prefix);
            out.push_str(&body);
            out.push(')');
            return;
        }
        let array_text = format!("{prefix}{body},");
        let extra_text = extras.join(", ") + ")";
        let last_line = array_text.len() - array_text.rfind('\n').map_or(0, |i| i + 1);
        out.push_str(&array_text);
        if last_line + extra_text.len() + 1 > LINE_WIDTH {
            out.push('\n');
            out.push_str(&" ".repeat(prefix.len()));
        } else {
            out.push(' ');
        }
        out.push_str(&extra_text);
    }

    /// The elements nested in brackets as the shape says, for our JSON-like
    /// form.
    fn write_nested(&self, index: &mut Vec<usize>, out: &mut String) {
        let Some(&n) = self.shape.get(index.len()) else {
            write_json_element(self.dtype.element(self.data, self.offset(index)), out);
            return;
        };
        out.push('[');
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            index.push(i);
            self.write_nested(index, out);
            index.pop();
        }
        out.push(']');
    }

    /// The flat index of the element at `index` (C order).
    fn offset(&self, index: &[usize]) -> usize {
        index
            .iter()
            .zip(&self.shape)
            .fold(0, |flat, (i, n)| flat * n + i)
    }

    /// The elements numpy formats to choose widths: all of them, or with a
    /// summary only the first and last `EDGE_ITEMS` of each long axis.
    fn shown_elements(&self, summarize: bool) -> Vec<Element> {
        let mut out = Vec::new();
        let mut index = Vec::with_capacity(self.shape.len());
        self.collect(&mut index, summarize, &mut out);
        out
    }

    fn collect(&self, index: &mut Vec<usize>, summarize: bool, out: &mut Vec<Element>) {
        let axis = index.len();
        let Some(&n) = self.shape.get(axis) else {
            out.push(self.dtype.element(self.data, self.offset(index)));
            return;
        };
        let positions: Vec<usize> = if summarize && 2 * EDGE_ITEMS < n {
            (0..EDGE_ITEMS).chain(n - EDGE_ITEMS..n).collect()
        } else {
            (0..n).collect()
        };
        for i in positions {
            index.push(i);
            self.collect(index, summarize, out);
            index.pop();
        }
    }

    /// numpy's `_formatArray`.
    fn format_array(&self, format: &Format, next_line_prefix: &str, summarize: bool) -> String {
        let mut index = Vec::with_capacity(self.shape.len());
        self.recurse(&mut index, next_line_prefix, LINE_WIDTH, format, summarize)
    }

    fn recurse(
        &self,
        index: &mut Vec<usize>,
        hanging_indent: &str,
        width: usize,
        format: &Format,
        summarize: bool,
    ) -> String {
        let axis = index.len();
        let Some(&length) = self.shape.get(axis) else {
            return format.apply(self.dtype.element(self.data, self.offset(index)));
        };
        let axes_left = self.shape.len() - axis;
        let next_indent = format!("{hanging_indent} ");
        let next_width = width.saturating_sub(1);
        let summary = summarize && 2 * EDGE_ITEMS < length;
        let (leading, trailing) = if summary {
            (EDGE_ITEMS, EDGE_ITEMS)
        } else {
            (0, length)
        };
        let separator = ", ";
        let nested = |i: usize, index: &mut Vec<usize>| {
            index.push(i);
            let text = self.recurse(index, &next_indent, next_width, format, summarize);
            index.pop();
            text
        };
        let mut s = String::new();
        if axes_left == 1 {
            let element_width = width.saturating_sub(1);
            let mut line = hanging_indent.to_owned();
            for i in 0..leading {
                let word = nested(i, index);
                extend_line(&mut s, &mut line, &word, element_width, hanging_indent);
                line.push_str(separator);
            }
            if summary {
                extend_line(&mut s, &mut line, "...", element_width, hanging_indent);
                line.push_str(separator);
            }
            for back in (2..=trailing).rev() {
                let word = nested(length - back, index);
                extend_line(&mut s, &mut line, &word, element_width, hanging_indent);
                line.push_str(separator);
            }
            let word = nested(length - 1, index);
            extend_line(&mut s, &mut line, &word, element_width, hanging_indent);
            s.push_str(&line);
        } else {
            let line_separator = format!(",{}", "\n".repeat(axes_left - 1));
            for i in 0..leading {
                s.push_str(hanging_indent);
                s.push_str(&nested(i, index));
                s.push_str(&line_separator);
            }
            if summary {
                s.push_str(hanging_indent);
                s.push_str("...");
                s.push_str(&line_separator);
            }
            for back in (2..=trailing).rev() {
                s.push_str(hanging_indent);
                s.push_str(&nested(length - back, index));
                s.push_str(&line_separator);
            }
            s.push_str(hanging_indent);
            s.push_str(&nested(length - 1, index));
        }
        format!("[{}]", s.get(hanging_indent.len()..).unwrap_or_default())
    }
}

/// numpy's `_extendLine`: wraps before `word` if the line would pass
/// `width`, unless wrapping would not help.
fn extend_line(
    s: &mut String,
    line: &mut String,
    word: &str,
    width: usize,
    next_line_prefix: &str,
) {
    let needs_wrap =
        line.chars().count() + word.chars().count() > width && line.len() > next_line_prefix.len();
    if needs_wrap {
        s.push_str(line.trim_end());
        s.push('\n');
        *line = next_line_prefix.to_owned();
    }
    line.push_str(word);
}

/// A python tuple's repr: `(3,)`, `(2, 0)`.
fn shape_repr(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// How every element of one array is written, chosen from all of them (as
/// numpy's `BoolFormat`, `IntegerFormat`, `FloatingFormat`).
enum Format {
    Bool { zero_d: bool },
    Integer { width: usize },
    Float(FloatFormat),
}

impl Format {
    fn new(array: &Array<'_>, summarize: bool) -> Format {
        let elements = array.shown_elements(summarize);
        match array.dtype.kind {
            Kind::Bool => Format::Bool {
                zero_d: array.shape.is_empty(),
            },
            Kind::Int | Kind::Uint => {
                let width = elements
                    .iter()
                    .map(|e| match e {
                        Element::Int(i) => i.to_string().len(),
                        Element::Uint(u) => u.to_string().len(),
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0);
                Format::Integer { width }
            }
            Kind::Float => Format::Float(FloatFormat::new(&elements, array.dtype.size == 4)),
        }
    }

    fn apply(&self, element: Element) -> String {
        match (self, element) {
            (Format::Bool { zero_d }, Element::Bool(b)) => match (b, zero_d) {
                (true, true) => "True".to_owned(),
                (true, false) => " True".to_owned(),
                (false, _) => "False".to_owned(),
            },
            (Format::Integer { width }, Element::Int(i)) => format!("{i:>width$}"),
            (Format::Integer { width }, Element::Uint(u)) => format!("{u:>width$}"),
            (Format::Float(f), e) => f.apply(e),
            _ => String::new(),
        }
    }
}

/// numpy's `FloatingFormat` for `floatmode='maxprec'`, `precision=8`.
struct FloatFormat {
    exponent: bool,
    precision: usize,
    pad_left: usize,
    pad_right: usize,
    /// Digits of the exponent (scientific only).
    exp_size: usize,
}

impl FloatFormat {
    fn new(elements: &[Element], single: bool) -> FloatFormat {
        let finite: Vec<Element> = elements
            .iter()
            .copied()
            .filter(|e| e.as_f64().is_finite())
            .collect();
        let magnitudes: Vec<f64> = finite
            .iter()
            .map(|e| e.as_f64().abs())
            .filter(|m| *m != 0.0)
            .collect();
        let mut exponent = false;
        if !magnitudes.is_empty() {
            let max = magnitudes.iter().copied().fold(f64::MIN, f64::max);
            let min = magnitudes.iter().copied().fold(f64::MAX, f64::min);
            // numpy compares in the array's own precision.
            exponent = if single {
                let (max, min) = (max as f32, min as f32);
                max >= 1e8 || min < 0.0001 || max / min > 1000.0
            } else {
                max >= 1e8 || min < 0.0001 || max / min > 1000.0
            };
        }
        let mut format = FloatFormat {
            exponent,
            precision: PRECISION,
            pad_left: 0,
            pad_right: 0,
            exp_size: 0,
        };
        if finite.is_empty() {
            // only NaN and infinities
        } else if exponent {
            let texts: Vec<String> = finite
                .iter()
                .map(|e| scientific(*e, PRECISION, 0, 0))
                .collect();
            let mut frac = 0;
            let mut int = 0;
            let mut exp = 0;
            for t in &texts {
                let (mantissa, e) = t.split_once('e').unwrap_or((t, ""));
                let (i, f) = mantissa.split_once('.').unwrap_or((mantissa, ""));
                int = int.max(i.len());
                frac = frac.max(f.len());
                exp = exp.max(e.len().saturating_sub(1));
            }
            format.exp_size = exp;
            format.precision = frac;
            format.pad_left = int;
            format.pad_right = exp + 2 + frac;
        } else {
            for e in &finite {
                let t = positional(*e, PRECISION);
                let (i, f) = t.split_once('.').unwrap_or((&t, ""));
                format.pad_left = format.pad_left.max(i.len());
                format.pad_right = format.pad_right.max(f.len());
            }
        }
        if finite.len() != elements.len() {
            let negative_inf = elements
                .iter()
                .any(|e| e.as_f64().is_infinite() && e.as_f64() < 0.0);
            let offset = format.pad_right + 1;
            format.pad_left = format
                .pad_left
                .max(3usize.saturating_sub(offset))
                .max((3 + usize::from(negative_inf)).saturating_sub(offset));
        }
        format
    }

    fn apply(&self, element: Element) -> String {
        let f = element.as_f64();
        let width = self.pad_left + self.pad_right + 1;
        if f.is_nan() {
            return format!("{:>width$}", "nan");
        }
        if f.is_infinite() {
            return format!("{:>width$}", if f < 0.0 { "-inf" } else { "inf" });
        }
        if self.exponent {
            let text = scientific(element, self.precision, self.precision, self.exp_size);
            let (int, _) = text.split_once('.').unwrap_or((&text, ""));
            format!(
                "{}{text}",
                " ".repeat(self.pad_left.saturating_sub(int.len()))
            )
        } else {
            let text = positional(element, PRECISION);
            let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
            format!(
                "{}{text}{}",
                " ".repeat(self.pad_left.saturating_sub(int.len())),
                " ".repeat(self.pad_right.saturating_sub(frac.len()))
            )
        }
    }
}

/// The shortest digits of an element in its own precision.
fn digits_of(element: Element) -> Digits {
    match element {
        Element::F32(f) => Digits::of_f32(f),
        other => Digits::of_f64(other.as_f64()),
    }
}

/// The element rounded to `places` digits after the point (exactly, half to
/// even, as numpy's Dragon4 does), in its own precision.
fn exact_fixed(element: Element, places: usize) -> String {
    match element {
        Element::F32(f) => format!("{f:.places$}"),
        other => format!("{:.places$}", other.as_f64()),
    }
}

fn exact_scientific(element: Element, places: usize) -> String {
    match element {
        Element::F32(f) => format!("{f:.places$e}"),
        other => format!("{:.places$e}", other.as_f64()),
    }
}

/// numpy's `dragon4_positional(x, precision, unique=True, trim='.')`: the
/// shortest digits, rounded to `precision` places if longer, trailing zeros
/// dropped but the point kept (`1.`, `2.5`, `-0.`).
fn positional(element: Element, precision: usize) -> String {
    let d = digits_of(element);
    let places = usize::try_from(i64::try_from(d.digits.len()).unwrap_or(0) - i64::from(d.point))
        .unwrap_or(0);
    let mut text = if places > precision {
        exact_fixed(element, precision)
    } else {
        let mut t = String::new();
        if d.negative {
            t.push('-');
        }
        if d.point <= 0 {
            t.push_str("0.");
            t.extend(std::iter::repeat_n('0', d.point.unsigned_abs() as usize));
            t.push_str(&d.digits);
        } else {
            let point = d.point.unsigned_abs() as usize;
            if point >= d.digits.len() {
                t.push_str(&d.digits);
                t.extend(std::iter::repeat_n('0', point - d.digits.len()));
                t.push('.');
            } else {
                let (int, frac) = d.digits.split_at(point);
                t.push_str(int);
                t.push('.');
                t.push_str(frac);
            }
        }
        t
    };
    if !text.contains('.') {
        text.push('.');
    }
    let trimmed = text.trim_end_matches('0').len();
    text.truncate(trimmed);
    if text == "-0." && !element.as_f64().is_sign_negative() {
        text.remove(0);
    }
    text
}

/// numpy's `dragon4_scientific(x, precision, unique=True)`: the shortest
/// digits (rounded to `precision` after the first if longer), then zeros up
/// to `min_digits`, the point always kept, the exponent signed with at least
/// `exp_digits` (and 2) digits: `1.e-05`, `2.50e+300`.
fn scientific(element: Element, precision: usize, min_digits: usize, exp_digits: usize) -> String {
    let d = digits_of(element);
    let (mut mantissa, exponent) = if d.digits.len().saturating_sub(1) > precision {
        let text = exact_scientific(element, precision);
        let (m, e) = text.split_once('e').unwrap_or((&text, "0"));
        (
            m.trim_start_matches('-').to_owned(),
            e.parse::<i32>().unwrap_or(0),
        )
    } else {
        let (first, rest) = d.digits.split_at(1.min(d.digits.len()));
        (format!("{first}.{rest}"), d.point - 1)
    };
    if !mantissa.contains('.') {
        mantissa.push('.');
    }
    let trimmed = mantissa.trim_end_matches('0').len();
    mantissa.truncate(trimmed);
    let places = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
    mantissa.extend(std::iter::repeat_n('0', min_digits.saturating_sub(places)));
    let sign = if exponent < 0 { '-' } else { '+' };
    let width = exp_digits.max(2);
    format!(
        "{}{mantissa}e{sign}{:0width$}",
        if d.negative { "-" } else { "" },
        exponent.unsigned_abs()
    )
}

/// A msgpack-numpy array as python's `numpy=True` components send it, for
/// the tests of this crate.
#[cfg(test)]
pub(crate) fn test_array(dtype: &str, shape: &[u64], data: Vec<u8>) -> Value {
    Value::Map(vec![
        (Value::Binary(b"nd".to_vec()), Value::Boolean(true)),
        (Value::Binary(b"type".to_vec()), Value::from(dtype)),
        (Value::Binary(b"kind".to_vec()), Value::Binary(vec![])),
        (
            Value::Binary(b"shape".to_vec()),
            Value::Array(shape.iter().map(|&d| Value::from(d)).collect()),
        ),
        (Value::Binary(b"data".to_vec()), Value::Binary(data)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_array as array;

    fn shown(value: &Value) -> Option<String> {
        let mut out = String::new();
        write_numpy(value, &mut out).then_some(out)
    }

    fn f64s(values: &[f64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn arrays_as_numpy_repr() {
        let ints: Vec<u8> = [1i64, -2, 30]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            shown(&array("<i8", &[3], ints)).as_deref(),
            Some("array([ 1, -2, 30])")
        );
        assert_eq!(
            shown(&array("<f8", &[2, 2], f64s(&[1.5, 2.5, 3.5, 4.5]))).as_deref(),
            Some("array([[1.5, 2.5],\n       [3.5, 4.5]])")
        );
        assert_eq!(
            shown(&array("<f8", &[2], f64s(&[1.0, 2.5]))).as_deref(),
            Some("array([1. , 2.5])")
        );
        assert_eq!(
            shown(&array("<f8", &[3], f64s(&[1e-5, 1.0, f64::NAN]))).as_deref(),
            Some("array([1.e-05, 1.e+00,    nan])")
        );
        assert_eq!(
            shown(&array("|u1", &[2], vec![7, 255])).as_deref(),
            Some("array([  7, 255], dtype=uint8)")
        );
        assert_eq!(
            shown(&array(">i2", &[1], vec![1, 0])).as_deref(),
            Some("array([256], dtype='>i2')")
        );
        assert_eq!(
            shown(&array("|b1", &[2], vec![1, 0])).as_deref(),
            Some("array([ True, False])")
        );
        assert_eq!(
            shown(&array("<i8", &[0], vec![])).as_deref(),
            Some("array([], dtype=int64)")
        );
        assert_eq!(
            shown(&array("<i8", &[], 5i64.to_le_bytes().to_vec())).as_deref(),
            Some("array(5)")
        );
    }

    #[test]
    fn scalars_as_numpy_repr() {
        let scalar = |dtype: &str, data: Vec<u8>| {
            Value::Map(vec![
                (Value::Binary(b"nd".to_vec()), Value::Boolean(false)),
                (Value::Binary(b"type".to_vec()), Value::from(dtype)),
                (Value::Binary(b"data".to_vec()), Value::Binary(data)),
            ])
        };
        assert_eq!(
            shown(&scalar("<i8", 5i64.to_le_bytes().to_vec())).as_deref(),
            Some("np.int64(5)")
        );
        assert_eq!(
            shown(&scalar("<f4", 0.1f32.to_le_bytes().to_vec())).as_deref(),
            Some("np.float32(0.1)")
        );
        assert_eq!(shown(&scalar("|b1", vec![1])).as_deref(), Some("np.True_"));
    }

    /// An empty array with a huge axis once meant one `[]` per row.
    #[test]
    fn empty_arrays_with_huge_axes_are_short() {
        let value = array("<i8", &[1 << 40, 0], vec![]);
        let numpy = Numpy::parse(&value).expect("an empty array");
        let mut display = String::new();
        numpy.write_display(&mut display);
        assert_eq!(display, "ndarray(<i8, shape [1099511627776, 0]) []");
        assert_eq!(
            shown(&value).as_deref(),
            Some("array([], shape=(1099511627776, 0), dtype=int64)")
        );
    }

    #[test]
    fn what_numpy_would_refuse_is_not_an_array() {
        // data shorter than the shape, a huge shape, an unknown or empty
        // dtype, a non-ASCII dtype, an object array
        for value in [
            array("<i8", &[2], vec![0; 8]),
            array("<i8", &[u64::MAX, 2], vec![0; 8]),
            array("<c16", &[1], vec![0; 16]),
            array("", &[1], vec![0; 8]),
            array("é8", &[1], vec![0; 8]),
            array("<i", &[1], vec![0; 8]),
            array("<i0", &[0], vec![]),
        ] {
            assert_eq!(shown(&value), None, "{value}");
        }
        let mut object = array("|O", &[1], vec![0; 8]);
        if let Value::Map(entries) = &mut object {
            entries[2].1 = Value::Binary(b"O".to_vec());
        }
        assert_eq!(shown(&object), None);
    }
}
