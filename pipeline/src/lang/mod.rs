//! The words users meet, in Vietnamese (the default) or English: one catalogue per language
//! (`vi.toml`, `en.toml`, keys by place), and numbers written each language's way (74,9 against
//! 74.9).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use figment::providers::{Format, Toml};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Vi,
    En,
}

type Catalogue = BTreeMap<String, BTreeMap<String, String>>;

fn catalogue(language: Language) -> &'static Catalogue {
    static VI: OnceLock<Catalogue> = OnceLock::new();
    static EN: OnceLock<Catalogue> = OnceLock::new();
    let (cell, text) = match language {
        Language::Vi => (&VI, include_str!("vi.toml")),
        Language::En => (&EN, include_str!("en.toml")),
    };
    cell.get_or_init(|| figment::Figment::from(Toml::string(text)).extract().expect("the shipped catalogue parses"))
}

impl Language {
    /// The text at `key` ("place.name") with its `{name}`s filled from `with`.
    pub fn say(self, key: &str, with: &[(&str, &str)]) -> String {
        let (place, name) = key.split_once('.').expect("a key is place.name");
        let text = catalogue(self).get(place).and_then(|p| p.get(name)).map_or(key, String::as_str);
        with.iter().fold(text.to_owned(), |text, (name, value)| text.replace(&format!("{{{name}}}"), value))
    }

    /// `value` with `decimals` places: a decimal comma and dots between thousands in Vietnamese
    /// (1.234,5), the other way round in English (1,234.5).
    pub fn number(self, value: f64, decimals: usize) -> String {
        let (thousands, point) = match self {
            Language::Vi => ('.', ','),
            Language::En => (',', '.'),
        };
        let plain = format!("{:.decimals$}", value.abs());
        let (whole, fraction) = plain.split_once('.').unwrap_or((&plain, ""));
        let mut grouped = String::new();
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(thousands);
            }
            grouped.push(digit);
        }
        let sign = if value < 0.0 && plain.chars().any(|c| c.is_ascii_digit() && c != '0') { "-" } else { "" };
        match fraction {
            "" => format!("{sign}{grouped}"),
            fraction => format!("{sign}{grouped}{point}{fraction}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_have_every_key_and_fill_it() {
        let keys = |language| -> Vec<(String, String)> {
            catalogue(language).iter().flat_map(|(p, names)| names.keys().map(|n| (p.clone(), n.clone()))).collect()
        };
        assert_eq!(keys(Language::Vi), keys(Language::En));
        let said = Language::Vi.say("alert.group", &[("group", "2")]);
        assert_eq!(said, "điểm nhóm 2");
    }

    #[test]
    fn numbers_the_vietnamese_way_and_the_english_way() {
        assert_eq!(Language::Vi.number(74.9, 1), "74,9");
        assert_eq!(Language::En.number(74.9, 1), "74.9");
        assert_eq!(Language::Vi.number(1234.5, 2), "1.234,50");
        assert_eq!(Language::En.number(-1234567.0, 0), "-1,234,567");
        assert_eq!(Language::Vi.number(-0.001, 2), "0,00");
    }
}
