//! Formatting shared by the CLI (`app/src/commands.rs`) and the web server
//! (`web/src/util.rs`): sizes in binary units, short ages, and UTC dates from Unix
//! seconds (no clock is read here; callers pass the time). It lives in the storage
//! crate because both depend on it and on nothing else of ours in common.

/// A size in binary units: `512 B`, `3.0 MiB`, `1.5 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A short age: `45s`, `12m`, `5h`, `3d`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A UTC date and time of day, as [`civil`] splits Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
    /// 0 = Sunday … 6 = Saturday.
    pub weekday: u32,
}

/// The UTC calendar date and time of Unix seconds (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
pub fn civil(secs: u64) -> Civil {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        // 1970-01-01 was a Thursday.
        weekday: ((days + 4).rem_euclid(7)) as u32,
    }
}

/// Days from 1970-01-01 to `year-month-day` (proleptic Gregorian; Howard Hinnant's
/// `days_from_civil`). `month` in 1..=12; the day is not checked against the month.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (y, m) = if month <= 2 {
        (year - 1, i64::from(month) + 9)
    } else {
        (year, i64::from(month) - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix seconds.
pub fn utc(secs: u64) -> String {
    let c = civil(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `YYYY-MM-DD HH:MM` (UTC) of Unix seconds.
pub fn utc_minutes(secs: u64) -> String {
    let c = civil(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 + 17), "3.0 MiB");
        assert_eq!(human_size(u64::MAX), "16384.0 PiB");
        assert_eq!(age(59), "59s");
        assert_eq!(age(60), "1m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(86_400 * 3 + 5), "3d");
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc_minutes(1_700_000_000), "2023-11-14 22:13");
        // 2026-12-07 was a Monday; 2024-02-29 a Thursday (checked with `date -u`).
        assert_eq!(civil(1_796_643_530).weekday, 1);
        assert_eq!(utc(1_709_251_199), "2024-02-29 23:59:59");
        assert_eq!(civil(1_709_251_199).weekday, 4);
        // Every day from 1970 to 2101, there and back.
        for day in 0u64..48_000 {
            let secs = day * 86_400 + 3_661;
            let c = civil(secs);
            assert_eq!(days_from_civil(c.year, c.month, c.day), day as i64);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 11, 1), 1_793_491_200 / 86_400);
    }
}
