//! Exact rational arithmetic for the `calculator` tool: + - * / ^,
//! parentheses, unary minus and decimals, on 128-bit numerators and
//! denominators kept in lowest terms. Every operation is checked, so an
//! expression whose value (or an intermediate) does not fit is an error that
//! says so, never a wrong answer, a panic or a hang; input length, nesting
//! depth and exponents are bounded before any work.
//!
//! Why not a big-integer crate: none is vendored here and the tool's job is
//! the arithmetic a language model delegates (word problems, GSM8K), where
//! 38 significant digits are far beyond what a model can use; overflow is
//! reported, not approximated.

use std::fmt;

/// Longest expression accepted (characters).
pub const MAX_EXPR_LEN: usize = 1000;
/// Deepest parenthesis nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Largest exponent magnitude accepted in `a ^ n`.
pub const MAX_EXPONENT: i128 = 512;

/// Why an expression has no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalcError {
    Syntax {
        at: usize,
        msg: String,
    },
    DivisionByZero,
    /// The value or an intermediate result exceeds 128-bit numerators/denominators.
    TooLarge,
    TooLong {
        len: usize,
    },
    TooDeep,
}

impl fmt::Display for CalcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalcError::Syntax { at, msg } => write!(f, "syntax error at character {at}: {msg}"),
            CalcError::DivisionByZero => write!(f, "division by zero"),
            CalcError::TooLarge => write!(f, "number too large (exceeds 128-bit exact arithmetic)"),
            CalcError::TooLong { len } => {
                write!(
                    f,
                    "expression of {len} characters exceeds the limit of {MAX_EXPR_LEN}"
                )
            }
            CalcError::TooDeep => write!(f, "parentheses nested deeper than {MAX_DEPTH}"),
        }
    }
}

impl std::error::Error for CalcError {}

/// A rational number p/q in lowest terms, q > 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rational {
    pub num: i128,
    pub den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

type R = Result<Rational, CalcError>;

impl Rational {
    pub fn int(n: i128) -> Rational {
        Rational { num: n, den: 1 }
    }

    fn new(num: i128, den: i128) -> R {
        if den == 0 {
            return Err(CalcError::DivisionByZero);
        }
        let g = gcd(num, den).max(1);
        let (mut n, mut d) = (num / g, den / g);
        if d < 0 {
            n = n.checked_neg().ok_or(CalcError::TooLarge)?;
            d = d.checked_neg().ok_or(CalcError::TooLarge)?;
        }
        Ok(Rational { num: n, den: d })
    }

    fn add(self, o: Rational) -> R {
        // a/b + c/d over lcm(b, d) keeps intermediates small.
        let g = gcd(self.den, o.den);
        let (bd, dd) = (self.den / g, o.den / g);
        let n = self
            .num
            .checked_mul(dd)
            .and_then(|x| o.num.checked_mul(bd).and_then(|y| x.checked_add(y)))
            .ok_or(CalcError::TooLarge)?;
        let d = self.den.checked_mul(dd).ok_or(CalcError::TooLarge)?;
        Rational::new(n, d)
    }

    fn neg(self) -> R {
        Ok(Rational {
            num: self.num.checked_neg().ok_or(CalcError::TooLarge)?,
            den: self.den,
        })
    }

    fn mul(self, o: Rational) -> R {
        // Cross-cancel first so a product that fits is never refused.
        let g1 = gcd(self.num, o.den).max(1);
        let g2 = gcd(o.num, self.den).max(1);
        let n = (self.num / g1)
            .checked_mul(o.num / g2)
            .ok_or(CalcError::TooLarge)?;
        let d = (self.den / g2)
            .checked_mul(o.den / g1)
            .ok_or(CalcError::TooLarge)?;
        Rational::new(n, d)
    }

    fn recip(self) -> R {
        Rational::new(self.den, self.num)
    }

    fn pow(self, e: Rational) -> R {
        if e.den != 1 {
            return Err(CalcError::Syntax {
                at: 0,
                msg: "only integer exponents are exact".into(),
            });
        }
        if e.num.abs() > MAX_EXPONENT {
            // |base| > 1 cannot fit; 0, 1 and -1 stay small.
            if self.num.abs() > self.den {
                return Err(CalcError::TooLarge);
            }
        }
        let base = if e.num < 0 { self.recip()? } else { self };
        let mut n = e.num.unsigned_abs();
        let (mut acc, mut b) = (Rational::int(1), base);
        // Square-and-multiply: at most ~128 checked steps before overflow.
        while n > 0 {
            if n & 1 == 1 {
                acc = acc.mul(b)?;
            }
            n >>= 1;
            if n > 0 {
                b = b.mul(b)?;
            }
        }
        Ok(acc)
    }
}

impl fmt::Display for Rational {
    /// Integers as integers, terminating fractions as exact decimals,
    /// anything else as `p/q`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            return write!(f, "{}", self.num);
        }
        let (mut d, mut twos, mut fives) = (self.den, 0u32, 0u32);
        while d % 2 == 0 {
            d /= 2;
            twos += 1;
        }
        while d % 5 == 0 {
            d /= 5;
            fives += 1;
        }
        let places = twos.max(fives);
        if d == 1 && places <= 30 {
            if let Some(scaled) = 10i128
                .checked_pow(places)
                .and_then(|p| self.num.checked_mul(p / self.den))
            {
                let s = scaled.unsigned_abs().to_string();
                let s = format!("{s:0>width$}", width = places as usize + 1);
                let (int, frac) = s.split_at(s.len() - places as usize);
                let sign = if self.num < 0 { "-" } else { "" };
                return write!(f, "{sign}{int}.{}", frac.trim_end_matches('0'));
            }
        }
        write!(f, "{}/{}", self.num, self.den)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> CalcError {
        CalcError::Syntax {
            at: self.i,
            msg: msg.into(),
        }
    }
    fn skip(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.s.get(self.i).copied()
    }
    // expr := term (('+' | '-') term)*
    fn expr(&mut self) -> R {
        let mut v = self.term()?;
        while let Some(c) = self.peek() {
            match c {
                b'+' => {
                    self.i += 1;
                    v = v.add(self.term()?)?;
                }
                b'-' => {
                    self.i += 1;
                    v = v.add(self.term()?.neg()?)?;
                }
                _ => break,
            }
        }
        Ok(v)
    }
    // term := unary (('*' | '/' | 'x' | '×' | '÷') unary)*
    fn term(&mut self) -> R {
        let mut v = self.unary()?;
        loop {
            match self.peek() {
                Some(b'*') if self.s.get(self.i + 1) != Some(&b'*') => {
                    self.i += 1;
                    v = v.mul(self.unary()?)?;
                }
                Some(b'/') => {
                    self.i += 1;
                    let d = self.unary()?;
                    if d.num == 0 {
                        return Err(CalcError::DivisionByZero);
                    }
                    v = v.mul(d.recip()?)?;
                }
                _ => break,
            }
        }
        Ok(v)
    }
    // unary := '-' unary | '+' unary | power
    fn unary(&mut self) -> R {
        match self.peek() {
            Some(b'-') => {
                self.i += 1;
                self.enter()?;
                let v = self.unary()?.neg();
                self.depth -= 1;
                v
            }
            Some(b'+') => {
                self.i += 1;
                self.enter()?;
                let v = self.unary();
                self.depth -= 1;
                v
            }
            _ => self.power(),
        }
    }
    // power := atom (('^' | '**') unary)?   (right-associative)
    fn power(&mut self) -> R {
        let base = self.atom()?;
        match self.peek() {
            Some(b'^') => {
                self.i += 1;
            }
            Some(b'*') if self.s.get(self.i + 1) == Some(&b'*') => {
                self.i += 2;
            }
            _ => return Ok(base),
        }
        self.enter()?;
        let e = self.unary()?;
        self.depth -= 1;
        base.pow(e)
    }
    fn enter(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CalcError::TooDeep);
        }
        Ok(())
    }
    fn atom(&mut self) -> R {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                self.enter()?;
                let v = self.expr()?;
                self.depth -= 1;
                if self.peek() != Some(b')') {
                    return Err(self.err("expected `)`"));
                }
                self.i += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(_) => Err(self.err("expected a number or `(`")),
            None => Err(self.err("unexpected end of expression")),
        }
    }
    fn number(&mut self) -> R {
        let start = self.i;
        let (mut num, mut den, mut seen_dot, mut digits) = (0i128, 1i128, false, 0);
        while let Some(&c) = self.s.get(self.i) {
            if c.is_ascii_digit() {
                num = num
                    .checked_mul(10)
                    .and_then(|n| n.checked_add((c - b'0') as i128))
                    .ok_or(CalcError::TooLarge)?;
                if seen_dot {
                    den = den.checked_mul(10).ok_or(CalcError::TooLarge)?;
                }
                digits += 1;
            } else if c == b'.' && !seen_dot {
                seen_dot = true;
            } else if c == b','
                && !seen_dot
                && self.s.get(self.i + 1).is_some_and(|d| d.is_ascii_digit())
            {
                // Thousands separators ("1,000") as models write them.
            } else {
                break;
            }
            self.i += 1;
        }
        if digits == 0 {
            self.i = start;
            return Err(self.err("expected digits"));
        }
        Rational::new(num, den)
    }
}

/// The exact value of `expr`.
pub fn evaluate(expr: &str) -> Result<Rational, CalcError> {
    let len = expr.chars().count();
    if len > MAX_EXPR_LEN {
        return Err(CalcError::TooLong { len });
    }
    let mut p = Parser {
        s: expr.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.expr()?;
    if p.peek().is_some() {
        return Err(p.err("unexpected character"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> String {
        match evaluate(s) {
            Ok(v) => v.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn exact_values() {
        assert_eq!(ev("347*29"), "10063");
        assert_eq!(ev("23 + 45"), "68");
        assert_eq!(ev("(1+2)*3 - 4/2"), "7");
        assert_eq!(ev("7/3"), "7/3");
        assert_eq!(ev("1/8"), "0.125");
        assert_eq!(ev("0.1 + 0.2"), "0.3");
        assert_eq!(ev("-3 - -4"), "1");
        assert_eq!(ev("2^10"), "1024");
        assert_eq!(ev("2**-2"), "0.25");
        assert_eq!(ev("-2^2"), "-4");
        assert_eq!(ev("2^3^2"), "512");
        assert_eq!(ev("1,250 * 4"), "5000");
        assert_eq!(ev("10/4"), "2.5");
        assert_eq!(ev("-1/3"), "-1/3");
        assert_eq!(
            ev("999999999999999999 * 999999999999999999"),
            "999999999999999998000000000000000001"
        );
        for (a, b) in [(123456789i128, 987654321i128), (-77, 13), (1, -1)] {
            assert_eq!(ev(&format!("{a}*{b}")), (a * b).to_string());
            assert_eq!(ev(&format!("{a}+{b}")), (a + b).to_string());
        }
    }

    #[test]
    fn hostile_input_is_an_error_in_bounded_time() {
        let t0 = std::time::Instant::now();
        assert!(ev("2^100000000").contains("too large"));
        assert!(ev("10^38 * 10^38").contains("too large"));
        assert!(ev("1/0").contains("division by zero"));
        assert!(ev("5/(3-3)").contains("division by zero"));
        assert!(ev("0^-1").contains("division by zero"));
        assert!(ev(&"9".repeat(10_000)).contains("exceeds the limit"));
        assert!(ev(&"1+".repeat(499).to_string()).starts_with("error"));
        assert!(ev(&format!("{}1{}", "(".repeat(200), ")".repeat(200))).contains("nested"));
        assert!(ev(&"-".repeat(900)).contains("nested"));
        assert!(ev("2 ^ 0.5").contains("integer exponents"));
        assert!(ev("3 +").starts_with("error: syntax"));
        assert!(ev("abc").starts_with("error: syntax"));
        assert!(ev("1 2").starts_with("error: syntax"));
        assert_eq!(ev("1^1000000000"), "1");
        assert_eq!(ev("(-1)^1000001"), "-1");
        assert!(t0.elapsed().as_secs_f64() < 1.0);
    }
}
