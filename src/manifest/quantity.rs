//! Kubernetes scalar types: resource quantities (`500m`, `128Mi`, `1e3`) and int-or-string.
//!
//! A [`Quantity`] keeps the text the author wrote (so a plan shows it unchanged) and knows its
//! value in milli-units, which is what the scheduler adds up.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    millis: i128,
}

impl Quantity {
    /// Parses a Kubernetes quantity: a decimal number with an optional binary (`Ki` … `Ei`),
    /// decimal (`n u m k M G T P E`) or exponent (`e3`) suffix.
    pub fn parse(text: &str) -> Result<Quantity, String> {
        let trimmed = text.trim();
        let split =
            trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(trimmed.len());
        let (number, suffix) = trimmed.split_at(split);
        let invalid = || format!("`{text}` is not a quantity; write it like 500m, 2, 128Mi or 1G");
        if number.is_empty() || number == "+" || number == "-" {
            return Err(invalid());
        }
        let (scale_num, scale_den): (i128, i128) = match suffix {
            "" => (1, 1),
            "n" => (1, 1_000_000_000),
            "u" => (1, 1_000_000),
            "m" => (1, 1_000),
            "k" => (1_000, 1),
            "M" => (1_000_000, 1),
            "G" => (1_000_000_000, 1),
            "T" => (1_000_000_000_000, 1),
            "P" => (1_000_000_000_000_000, 1),
            "E" => (1_000_000_000_000_000_000, 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            "Ei" => (1 << 60, 1),
            exponent if exponent.starts_with(['e', 'E']) => {
                let power: u32 = exponent[1..].parse().map_err(|_| invalid())?;
                if power > 18 {
                    return Err(invalid());
                }
                (10i128.pow(power), 1)
            }
            _ => return Err(invalid()),
        };
        let negative = number.starts_with('-');
        let digits = number.trim_start_matches(['+', '-']);
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') || fraction.len() > 9 {
            return Err(invalid());
        }
        let parse_digits = |s: &str| -> Result<i128, String> {
            if s.is_empty() { Ok(0) } else { s.parse::<i128>().map_err(|_| invalid()) }
        };
        let fraction_scale = 10i128.pow(fraction.len() as u32);
        // The value times 1000, computed exactly as (whole * 10^f + fraction) * scale * 1000 / (10^f * den).
        let mantissa = parse_digits(whole)?
            .checked_mul(fraction_scale)
            .and_then(|m| m.checked_add(parse_digits(fraction).ok()?))
            .ok_or_else(invalid)?;
        let millis = mantissa
            .checked_mul(scale_num)
            .and_then(|m| m.checked_mul(1000))
            .map(|m| m / (fraction_scale * scale_den))
            .ok_or_else(invalid)?;
        Ok(Quantity { text: trimmed.to_owned(), millis: if negative { -millis } else { millis } })
    }

    /// The value in thousandths: CPU in millicores, memory in thousandths of a byte.
    pub fn millis(&self) -> i128 {
        self.millis
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;
        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 500m, 2, 128Mi or 1G")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Quantity::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Quantity::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Quantity::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(QuantityVisitor)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A quantity such as 500m, 2, 128Mi or 1G.",
            "anyOf": [
                { "type": "number" },
                { "type": "string", "pattern": "^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([numkMGTPE]|[KMGTPE]i|[eE][0-9]+)?$" }
            ]
        })
    }
}

/// A number, or a string such as a port name or a percentage (`25%`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl IntOrString {
    /// Resolves a count or percent of `total`, rounding a percent up or down.
    pub fn scaled(&self, total: i32, round_up: bool) -> Result<i32, String> {
        match self {
            IntOrString::Int(n) => Ok(*n),
            IntOrString::String(s) => {
                let percent: i64 = s
                    .strip_suffix('%')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("`{s}` is neither a number nor a percentage like 25%"))?;
                let scaled = i64::from(total) * percent;
                let value = if round_up { (scaled + 99).div_euclid(100) } else { scaled.div_euclid(100) };
                Ok(value as i32)
            }
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(n) => serializer.serialize_i32(*n),
            IntOrString::String(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntOrStringVisitor;
        impl Visitor<'_> for IntOrStringVisitor {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v).map(IntOrString::Int).map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v).map(IntOrString::Int).map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_owned()))
            }
        }
        deserializer.deserialize_any(IntOrStringVisitor)
    }
}

impl JsonSchema for IntOrString {
    fn schema_name() -> Cow<'static, str> {
        "IntOrString".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "anyOf": [{ "type": "integer" }, { "type": "string" }] })
    }
}

/// CPU and memory of a node or a pod, in the units the scheduler adds up: the manifest
/// vocabulary of `resources`, which the planner, the controller and the agent protocol share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    /// The sum, saturating: requests no node can hold stay larger than every node, never wrap.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_quantities() {
        let millis = |s: &str| Quantity::parse(s).unwrap().millis();
        assert_eq!(millis("500m"), 500);
        assert_eq!(millis("2"), 2000);
        assert_eq!(millis("0.5"), 500);
        assert_eq!(millis("128Mi"), 128 * 1024 * 1024 * 1000);
        assert_eq!(millis("1G"), 1_000_000_000_000);
        assert_eq!(millis("1e3"), 1_000_000);
        assert!(Quantity::parse("12 bananas").is_err());
        assert!(Quantity::parse("Mi").is_err());
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let quarter = IntOrString::String("25%".into());
        assert_eq!(quarter.scaled(3, true), Ok(1));
        assert_eq!(quarter.scaled(3, false), Ok(0));
        assert_eq!(IntOrString::Int(2).scaled(10, false), Ok(2));
    }
}
