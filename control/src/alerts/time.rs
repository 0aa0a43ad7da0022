//! Unix milliseconds as an RFC 3339 UTC timestamp
//! (`2024-02-29T12:34:56.789Z`), the form both syslog (RFC 5424) and the
//! alert receivers expect. Written here rather than taken from a date
//! crate: it is one well-known algorithm (Howard Hinnant's
//! `civil_from_days`), and it must never read the clock — callers pass
//! the time in.

/// A calendar date in the proleptic Gregorian calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilDate {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
}

/// The date `days` days after 1970-01-01 (negative: before it).
pub fn civil_from_days(days: i64) -> CivilDate {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // [1, 31]
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    CivilDate {
        year,
        // Both are small and positive by construction.
        month: u32::try_from(month).unwrap_or(1),
        day: u32::try_from(day).unwrap_or(1),
    }
}

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_utc_millis(unix_ms: u64) -> String {
    const MS_PER_DAY: u64 = 86_400_000;
    let days = i64::try_from(unix_ms / MS_PER_DAY).unwrap_or(i64::MAX / 2);
    let ms_of_day = unix_ms % MS_PER_DAY;
    let date = civil_from_days(days);
    let hours = ms_of_day / 3_600_000;
    let minutes = ms_of_day / 60_000 % 60;
    let seconds = ms_of_day / 1000 % 60;
    let millis = ms_of_day % 1000;
    format!(
        "{:04}-{:02}-{:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z",
        date.year, date.month, date.day
    )
}

/// The wall clock now, in unix milliseconds (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch() {
        assert_eq!(rfc3339_utc_millis(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_leap_day() {
        // date -u -d 2024-02-29T12:34:56.789Z +%s%3N
        assert_eq!(
            rfc3339_utc_millis(1_709_210_096_789),
            "2024-02-29T12:34:56.789Z"
        );
        // The day after a leap day is March 1st, not February 30th.
        assert_eq!(
            rfc3339_utc_millis(1_709_251_200_000),
            "2024-03-01T00:00:00.000Z"
        );
    }

    #[test]
    fn the_year_2000_is_a_leap_year_and_1900_is_not() {
        assert_eq!(
            civil_from_days(11_016),
            CivilDate {
                year: 2000,
                month: 2,
                day: 29
            }
        );
        assert_eq!(
            civil_from_days(-25_508),
            CivilDate {
                year: 1900,
                month: 3,
                day: 1
            }
        );
        assert_eq!(
            civil_from_days(-25_509),
            CivilDate {
                year: 1900,
                month: 2,
                day: 28
            }
        );
    }

    #[test]
    fn year_ends_and_the_last_millisecond_of_a_day() {
        assert_eq!(
            rfc3339_utc_millis(1_704_067_199_999),
            "2023-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_utc_millis(1_704_067_200_000),
            "2024-01-01T00:00:00.000Z"
        );
        // 2038-01-19T03:14:08Z: one second past the 32-bit time_t limit.
        assert_eq!(
            rfc3339_utc_millis(2_147_483_648_000),
            "2038-01-19T03:14:08.000Z"
        );
    }

    #[test]
    fn four_centuries_of_days_match_a_calendar_counted_day_by_day() {
        let is_leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let days_in = |y: i64, m: u32| match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut counted = CivilDate {
            year: 1970,
            month: 1,
            day: 1,
        };
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), counted, "day {days}");
            counted.day += 1;
            if counted.day > days_in(counted.year, counted.month) {
                counted.day = 1;
                counted.month += 1;
                if counted.month > 12 {
                    counted.month = 1;
                    counted.year += 1;
                }
            }
        }
    }
}
