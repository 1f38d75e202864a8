//! Business hours and holidays of one time zone (SPEC T7; seed 001 line 309: "具体时区中配置办公
//! 时间和假期"). A tenant has at most one schedule per IANA time zone; queues
//! (`time_routing.time_zone`) and inbound routes refer to it by that time zone, and
//! [`is_open`] evaluates it for a call arriving at a UTC instant, so the control plane and the
//! edge agree on what "open" means.
//!
//! Time zones are checked against the IANA database compiled into `chrono-tz` (prebuilt
//! tables, no build-time code generation), so a name the edge could not evaluate is refused by
//! the API.

use crate::queue::QueueOpen;
use crate::setting::{check_text, invalid, InvalidSetting};
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// At most this many office-hours intervals per schedule.
pub const MAX_OFFICE_HOURS: usize = 50;
/// At most this many holidays per schedule.
pub const MAX_HOLIDAYS: usize = 200;
/// A holiday spans at most this many days.
pub const MAX_HOLIDAY_DAYS: i64 = 366;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    fn from_chrono(d: chrono::Weekday) -> Self {
        match d {
            chrono::Weekday::Mon => Weekday::Mon,
            chrono::Weekday::Tue => Weekday::Tue,
            chrono::Weekday::Wed => Weekday::Wed,
            chrono::Weekday::Thu => Weekday::Thu,
            chrono::Weekday::Fri => Weekday::Fri,
            chrono::Weekday::Sat => Weekday::Sat,
            chrono::Weekday::Sun => Weekday::Sun,
        }
    }
}

/// Open on `days` from `start` to `end` local time (`HH:MM`, 24-hour; `end` may be `24:00`;
/// `start` < `end`, so a night shift is two intervals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfficeHours {
    pub days: Vec<Weekday>,
    pub start: String,
    pub end: String,
}

/// A holiday: every local day from `start` to `end` (`YYYY-MM-DD`, both included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Holiday {
    pub name: String,
    pub start: String,
    pub end: String,
    /// Prompt played before routing to the holiday destination (seed 001 line 320:
    /// 假期 > 类型 > 提示音), when the queue or route asks for it.
    #[serde(default)]
    pub prompt: Option<String>,
}

/// Business hours and holidays of one time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// IANA time zone name (`Europe/Berlin`); one schedule per time zone and tenant.
    pub time_zone: String,
    /// No interval: never open (every call is off hours or a holiday).
    #[serde(default)]
    pub office_hours: Vec<OfficeHours>,
    #[serde(default)]
    pub holidays: Vec<Holiday>,
}

impl Default for Schedule {
    /// Monday to Friday, 09:00-18:00 in UTC (the API's default when a field is left out).
    fn default() -> Self {
        Self {
            time_zone: "UTC".into(),
            office_hours: vec![OfficeHours {
                days: vec![
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                ],
                start: "09:00".into(),
                end: "18:00".into(),
            }],
            holidays: Vec::new(),
        }
    }
}

/// Minutes since midnight of `HH:MM`; `24:00` is 1440.
fn parse_minutes(s: &str) -> Option<u32> {
    if s == "24:00" {
        return Some(24 * 60);
    }
    if s.len() != 5 {
        return None;
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M").ok()?;
    Some(t.hour() * 60 + t.minute())
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Whether `name` is an IANA time zone name this build knows.
pub fn is_time_zone(name: &str) -> bool {
    name.parse::<chrono_tz::Tz>().is_ok()
}

impl Schedule {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !is_time_zone(&self.time_zone) {
            return Err(invalid(
                "time_zone",
                format!("{:?} is not an IANA time zone name", self.time_zone),
            ));
        }
        if self.office_hours.len() > MAX_OFFICE_HOURS {
            return Err(invalid(
                "office_hours",
                format!("at most {MAX_OFFICE_HOURS} intervals"),
            ));
        }
        for (i, h) in self.office_hours.iter().enumerate() {
            if h.days.is_empty() {
                return Err(invalid(
                    format!("office_hours[{i}].days"),
                    "name at least one day",
                ));
            }
            let start = parse_minutes(&h.start).filter(|m| *m < 24 * 60);
            let Some(start) = start else {
                return Err(invalid(
                    format!("office_hours[{i}].start"),
                    "must be HH:MM (00:00-23:59)",
                ));
            };
            let Some(end) = parse_minutes(&h.end) else {
                return Err(invalid(
                    format!("office_hours[{i}].end"),
                    "must be HH:MM (00:01-24:00)",
                ));
            };
            if end <= start {
                return Err(invalid(
                    format!("office_hours[{i}].end"),
                    "must be after start (split a night shift in two intervals)",
                ));
            }
        }
        if self.holidays.len() > MAX_HOLIDAYS {
            return Err(invalid("holidays", format!("at most {MAX_HOLIDAYS} holidays")));
        }
        for (i, h) in self.holidays.iter().enumerate() {
            check_text(&format!("holidays[{i}].name"), Some(&h.name))?;
            check_text(&format!("holidays[{i}].prompt"), h.prompt.as_deref())?;
            let Some(start) = parse_date(&h.start) else {
                return Err(invalid(
                    format!("holidays[{i}].start"),
                    "must be a date YYYY-MM-DD",
                ));
            };
            let Some(end) = parse_date(&h.end) else {
                return Err(invalid(format!("holidays[{i}].end"), "must be a date YYYY-MM-DD"));
            };
            let days = (end - start).num_days();
            if !(0..MAX_HOLIDAY_DAYS).contains(&days) {
                return Err(invalid(
                    format!("holidays[{i}].end"),
                    format!("must be on or after start, at most {MAX_HOLIDAY_DAYS} days"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the office hours alone say open at local weekday `day`, minute `minute`.
    fn office_open(&self, day: Weekday, minute: u32) -> bool {
        self.office_hours.iter().any(|h| {
            h.days.contains(&day)
                && matches!(
                    (parse_minutes(&h.start), parse_minutes(&h.end)),
                    (Some(s), Some(e)) if s <= minute && minute < e
                )
        })
    }
}

/// What the schedule says for a call arriving at `at`: open, off hours, or a holiday (with
/// what the office hours alone would say, for queues that ignore holidays, and the holiday's
/// prompt). A schedule with an unknown time zone (never stored: `validate` refuses it) is
/// evaluated in UTC rather than failing a call.
pub fn is_open(schedule: &Schedule, at: DateTime<Utc>) -> QueueOpen {
    let tz: chrono_tz::Tz = schedule.time_zone.parse().unwrap_or(chrono_tz::UTC);
    // The wall clock of the instant in the zone: DST gaps and overlaps need no special case,
    // as every instant has exactly one local time.
    let local = at.with_timezone(&tz).naive_local();
    let day = Weekday::from_chrono(local.weekday());
    let minute = local.hour() * 60 + local.minute();
    let office_hours_open = schedule.office_open(day, minute);
    let date = local.date();
    let holiday = schedule.holidays.iter().find(|h| {
        matches!((parse_date(&h.start), parse_date(&h.end)), (Some(s), Some(e)) if s <= date && date <= e)
    });
    match holiday {
        Some(h) => QueueOpen::Holiday {
            office_hours_open,
            prompt: h.prompt.clone(),
        },
        None if office_hours_open => QueueOpen::Open,
        None => QueueOpen::OffHours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or_else(|| panic!("bad test date"))
    }

    fn berlin() -> Schedule {
        Schedule {
            time_zone: "Europe/Berlin".into(),
            ..Schedule::default()
        }
    }

    #[test]
    fn office_hours_follow_the_zone_across_dst() {
        let s = berlin();
        // Winter (UTC+1): 08:30 UTC is 09:30 local, open; 07:30 UTC is 08:30 local, closed.
        assert_eq!(is_open(&s, utc(2026, 3, 27, 8, 30)), QueueOpen::Open);
        assert_eq!(is_open(&s, utc(2026, 3, 27, 7, 30)), QueueOpen::OffHours);
        // DST starts Sunday 2026-03-29. Summer (UTC+2): 07:30 UTC is 09:30 local, open.
        assert_eq!(is_open(&s, utc(2026, 3, 30, 7, 30)), QueueOpen::Open);
        assert_eq!(is_open(&s, utc(2026, 3, 30, 6, 59)), QueueOpen::OffHours);
        // Closing: 16:00 UTC is 18:00 local in summer (closed), 17:00 local in winter (open).
        assert_eq!(is_open(&s, utc(2026, 3, 30, 16, 0)), QueueOpen::OffHours);
        assert_eq!(is_open(&s, utc(2026, 3, 27, 16, 0)), QueueOpen::Open);
        // DST ends Sunday 2026-10-25: Monday 08:30 UTC is 09:30 local again.
        assert_eq!(is_open(&s, utc(2026, 10, 23, 8, 30)), QueueOpen::Open);
        assert_eq!(is_open(&s, utc(2026, 10, 23, 6, 30)), QueueOpen::OffHours);
        assert_eq!(is_open(&s, utc(2026, 10, 26, 8, 30)), QueueOpen::Open);
        assert_eq!(is_open(&s, utc(2026, 10, 26, 7, 59)), QueueOpen::OffHours);
        // The weekend is closed.
        assert_eq!(is_open(&s, utc(2026, 3, 28, 10, 0)), QueueOpen::OffHours);
    }

    #[test]
    fn the_switch_night_itself_is_evaluated_on_the_wall_clock() {
        // A night interval over the spring-forward hour (02:00-03:00 does not exist locally).
        let s = Schedule {
            time_zone: "America/New_York".into(),
            office_hours: vec![OfficeHours {
                days: vec![Weekday::Sun],
                start: "01:00".into(),
                end: "04:00".into(),
            }],
            holidays: vec![],
        };
        // 2026-03-08: 06:30 UTC = 01:30 EST (open); 07:30 UTC = 03:30 EDT (open);
        // 08:30 UTC = 04:30 EDT (closed).
        assert_eq!(is_open(&s, utc(2026, 3, 8, 6, 30)), QueueOpen::Open);
        assert_eq!(is_open(&s, utc(2026, 3, 8, 7, 30)), QueueOpen::Open);
        assert_eq!(is_open(&s, utc(2026, 3, 8, 8, 30)), QueueOpen::OffHours);
        // Fall back 2026-11-01: 01:30 local happens twice (05:30 and 06:30 UTC), open both times.
        let mut fall = s.clone();
        fall.office_hours[0].end = "02:00".into();
        assert_eq!(is_open(&fall, utc(2026, 11, 1, 5, 30)), QueueOpen::Open);
        assert_eq!(is_open(&fall, utc(2026, 11, 1, 6, 30)), QueueOpen::Open);
        assert_eq!(is_open(&fall, utc(2026, 11, 1, 7, 30)), QueueOpen::OffHours);
    }

    #[test]
    fn holidays_are_local_days_and_keep_the_office_hours_answer() {
        let mut s = Schedule {
            time_zone: "Asia/Shanghai".into(),
            ..Schedule::default()
        };
        s.holidays.push(Holiday {
            name: "National Day".into(),
            start: "2026-10-01".into(),
            end: "2026-10-07".into(),
            prompt: Some("national-day".into()),
        });
        // 2026-09-30 16:30 UTC is 2026-10-01 00:30 in Shanghai: a holiday, office hours closed.
        assert_eq!(
            is_open(&s, utc(2026, 9, 30, 16, 30)),
            QueueOpen::Holiday {
                office_hours_open: false,
                prompt: Some("national-day".into())
            }
        );
        // Friday 2026-10-02 10:00 local (02:00 UTC): holiday, but office hours would be open.
        assert_eq!(
            is_open(&s, utc(2026, 10, 2, 2, 0)),
            QueueOpen::Holiday {
                office_hours_open: true,
                prompt: Some("national-day".into())
            }
        );
        // 2026-10-07 23:59 local is still the holiday; 2026-10-08 09:00 local is open.
        assert!(matches!(
            is_open(&s, utc(2026, 10, 7, 15, 59)),
            QueueOpen::Holiday { .. }
        ));
        assert_eq!(is_open(&s, utc(2026, 10, 8, 1, 0)), QueueOpen::Open);
    }

    #[test]
    fn validation_names_the_field() {
        let field = |s: &Schedule| s.validate().err().map(|e| e.field);
        assert_eq!(field(&berlin()), None);
        let mut s = berlin();
        s.time_zone = "Mars/Olympus".into();
        assert_eq!(field(&s).as_deref(), Some("time_zone"));
        let mut s = berlin();
        s.office_hours[0].start = "9:00".into();
        assert_eq!(field(&s).as_deref(), Some("office_hours[0].start"));
        let mut s = berlin();
        s.office_hours[0].end = "08:00".into();
        assert_eq!(field(&s).as_deref(), Some("office_hours[0].end"));
        let mut s = berlin();
        s.office_hours[0].end = "24:00".into();
        assert_eq!(field(&s), None);
        let mut s = berlin();
        s.office_hours[0].days.clear();
        assert_eq!(field(&s).as_deref(), Some("office_hours[0].days"));
        let mut s = berlin();
        s.holidays.push(Holiday {
            name: "x".into(),
            start: "2026-12-26".into(),
            end: "2026-12-25".into(),
            prompt: None,
        });
        assert_eq!(field(&s).as_deref(), Some("holidays[0].end"));
        s.holidays[0].end = "2026-02-30".into();
        assert_eq!(field(&s).as_deref(), Some("holidays[0].end"));
    }
}
