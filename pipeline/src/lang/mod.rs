//! The words users meet, in Vietnamese (the default) or English: one catalogue per language
//! (`vi.toml`, `en.toml`, keys by place), and numbers written each language's way (74,9 against
//! 74.9).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use figment::providers::{Format, Toml};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
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

    /// Its tag: `vi`, `en` (HTML's lang, `?lang=`).
    pub fn tag(self) -> &'static str {
        match self {
            Language::Vi => "vi",
            Language::En => "en",
        }
    }

    pub fn other(self) -> Language {
        match self {
            Language::Vi => Language::En,
            Language::En => Language::Vi,
        }
    }

    /// Every text of a place of the catalogue (`wall`: the IOC page's words).
    pub fn words(self, place: &str) -> &'static BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        catalogue(self).get(place).unwrap_or(&NONE)
    }

    /// The language a reader asked for: `?lang=` first, else the first of the browser's
    /// Accept-Language (by its q-values) that we speak, else `default`.
    pub fn choose(asked: Option<&str>, accept_language: Option<&str>, default: Language) -> Result<Language, String> {
        if let Some(asked) = asked {
            return Language::from_tag(asked).ok_or_else(|| format!("lang={asked}: write lang=vi or lang=en"));
        }
        let mut ranges: Vec<(f32, &str)> = accept_language
            .unwrap_or_default()
            .split(',')
            .map(|range| {
                let mut parts = range.split(';').map(str::trim);
                let tag = parts.next().unwrap_or_default();
                let q = parts.find_map(|p| p.strip_prefix("q=")).and_then(|q| q.parse().ok()).unwrap_or(1.0);
                (q, tag)
            })
            .filter(|(q, _)| *q > 0.0)
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(ranges
            .iter()
            .find_map(|(_, tag)| Language::from_tag(tag.split('-').next().unwrap_or_default()))
            .unwrap_or(default))
    }

    fn from_tag(tag: &str) -> Option<Language> {
        match tag.to_ascii_lowercase().as_str() {
            "vi" => Some(Language::Vi),
            "en" => Some(Language::En),
            _ => None,
        }
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
    fn the_reader_chooses_by_lang_then_by_the_browser_then_the_default() {
        let choose = |asked, accept| Language::choose(asked, accept, Language::Vi);
        assert_eq!(choose(Some("en"), Some("vi")), Ok(Language::En));
        assert!(choose(Some("fr"), None).unwrap_err().contains("lang=vi or lang=en"));
        assert_eq!(choose(None, Some("fr-FR, en-US;q=0.8, vi;q=0.5")), Ok(Language::En));
        assert_eq!(choose(None, Some("en;q=0.4, vi-VN;q=0.9")), Ok(Language::Vi));
        assert_eq!(choose(None, Some("de, fr")), Ok(Language::Vi));
        assert_eq!(Language::choose(None, Some("en;q=0"), Language::Vi), Ok(Language::Vi));
        assert_eq!(Language::choose(None, None, Language::En), Ok(Language::En));
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
