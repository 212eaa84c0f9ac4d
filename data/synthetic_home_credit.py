"""Synthetic Home Credit Default Risk tables with the Kaggle column names and a learnable signal.

The real competition files (``application_train.csv``, ``application_test.csv``, ``bureau.csv``)
go through exactly the same pipeline; this generator only stands in when they are absent.
Default risk rises with the credit-to-income and annuity-to-income ratios, youth, short
employment, active bureau credits and overdue amounts, and the intercept is solved so that the
default rate matches the target (~8%, as in the real data).

    python data/synthetic_home_credit.py --applicants 20000 --out data/
"""

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("synthetic_home_credit")

FIRST_ID = 100002
UNEMPLOYED_DAYS = 365243  # the Kaggle data's sentinel for pensioners / not employed
TABLE_FILES = ("application_train.csv", "application_test.csv", "bureau.csv")


@dataclass(frozen=True)
class HomeCreditTables:
    application_train: pd.DataFrame
    application_test: pd.DataFrame
    bureau: pd.DataFrame

    def write(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, frame in zip(TABLE_FILES, (self.application_train, self.application_test, self.bureau), strict=True):
            path = out_dir / name
            tmp = path.with_suffix(".csv.tmp")
            frame.to_csv(tmp, index=False)
            tmp.replace(path)  # a reader never sees a half-written CSV
            paths.append(path)
        return paths


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _intercept_for_rate(score: np.ndarray, rate: float) -> float:
    """Bisection on the intercept so that mean(sigmoid(b + score)) == rate."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if _sigmoid(mid + score).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def generate(
    applicants: int, *, seed: int = 7, test_fraction: float = 0.15, default_rate: float = 0.08
) -> HomeCreditTables:
    if applicants < 10:
        raise ValueError(f"applicants must be at least 10, got {applicants}")
    rng = np.random.default_rng(seed)
    n = applicants
    ids = np.arange(FIRST_ID, FIRST_ID + n, dtype=np.int64)

    income = np.round(np.exp(rng.normal(11.9, 0.5, n)) / 450) * 450
    credit = np.round(income * rng.lognormal(1.0, 0.6, n) / 500) * 500 + 45000
    annuity = np.round(credit * rng.uniform(0.03, 0.09, n), 1)
    annuity[rng.random(n) < 0.0005] = np.nan  # the real column has a few gaps
    goods_price = np.round(credit * rng.uniform(0.8, 1.0, n) / 450) * 450
    days_birth = -rng.integers(21 * 365, 69 * 365, n)
    age_years = -days_birth / 365.25
    employed_years = rng.gamma(2.0, 3.0, n)
    days_employed = -np.minimum(employed_years * 365.25, (age_years - 18) * 365.25).astype(np.int64)
    pensioner = (age_years > 55) & (rng.random(n) < 0.6)
    days_employed = np.where(pensioner, UNEMPLOYED_DAYS, days_employed)

    # Bureau: a Poisson number of past credits per applicant, a share still active, some overdue.
    risk_trait = rng.normal(0, 1, n)  # hidden propensity that also shows in the bureau history
    credits_per_applicant = rng.poisson(np.clip(4 + risk_trait, 0.2, None))
    owner = np.repeat(np.arange(n), credits_per_applicant)
    m = owner.size
    active = rng.random(m) < _sigmoid(-0.8 + 0.6 * risk_trait[owner])
    days_credit = -rng.integers(1, 2900, m)
    days_enddate = np.where(active, rng.integers(1, 1800, m), -rng.integers(1, 2900, m)).astype(float)
    days_enddate[rng.random(m) < 0.06] = np.nan
    amt_credit_sum = np.round(rng.lognormal(12.0, 1.0, m), 2)
    overdue_prob = _sigmoid(-4.0 + 1.2 * risk_trait[owner])
    amt_overdue = np.where(rng.random(m) < overdue_prob, np.round(rng.lognormal(8.5, 1.2, m), 2), 0.0)

    active_count = np.bincount(owner, weights=active, minlength=n)
    overdue_total = np.bincount(owner, weights=amt_overdue, minlength=n)
    employed_days = np.where(pensioner, 0, -days_employed)
    score = (
        0.9 * np.log(credit / income)
        + 2.5 * np.nan_to_num(annuity / income, nan=0.2)
        - 0.035 * (age_years - 40)
        - 0.00025 * employed_days
        + 0.25 * active_count
        + 0.45 * np.log1p(overdue_total / 1000)
        + 0.5 * risk_trait
    )
    target = (rng.random(n) < _sigmoid(_intercept_for_rate(score, default_rate) + score)).astype(np.int64)

    applications = pd.DataFrame(
        {
            "SK_ID_CURR": ids,
            "TARGET": target,
            "NAME_CONTRACT_TYPE": np.where(rng.random(n) < 0.9, "Cash loans", "Revolving loans"),
            "CODE_GENDER": np.where(rng.random(n) < 0.66, "F", "M"),
            "FLAG_OWN_CAR": np.where(rng.random(n) < 0.34, "Y", "N"),
            "FLAG_OWN_REALTY": np.where(rng.random(n) < 0.69, "Y", "N"),
            "CNT_CHILDREN": rng.poisson(0.4, n),
            "AMT_INCOME_TOTAL": income,
            "AMT_CREDIT": credit,
            "AMT_ANNUITY": annuity,
            "AMT_GOODS_PRICE": goods_price,
            "NAME_INCOME_TYPE": np.where(pensioner, "Pensioner", "Working"),
            "DAYS_BIRTH": days_birth,
            "DAYS_EMPLOYED": days_employed,
        }
    )
    bureau = pd.DataFrame(
        {
            "SK_ID_CURR": ids[owner],
            "SK_ID_BUREAU": np.arange(5_000_000, 5_000_000 + m, dtype=np.int64),
            "CREDIT_ACTIVE": np.where(active, "Active", "Closed"),
            "CREDIT_CURRENCY": "currency 1",
            "DAYS_CREDIT": days_credit,
            "CREDIT_DAY_OVERDUE": np.where(amt_overdue > 0, rng.integers(1, 90, m), 0),
            "DAYS_CREDIT_ENDDATE": days_enddate,
            "AMT_CREDIT_SUM": amt_credit_sum,
            "AMT_CREDIT_SUM_OVERDUE": amt_overdue,
            "CREDIT_TYPE": np.where(rng.random(m) < 0.7, "Consumer credit", "Credit card"),
        }
    )
    is_test = rng.random(n) < test_fraction
    return HomeCreditTables(
        application_train=applications[~is_test].reset_index(drop=True),
        application_test=applications[is_test].drop(columns=["TARGET"]).reset_index(drop=True),
        bureau=bureau,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--applicants", type=int, default=20_000, help="applicants in train + test")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--force", action="store_true", help="overwrite existing CSVs (real Kaggle files included)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    present = [name for name in TABLE_FILES if (args.out / name).exists()]
    if present and not args.force:
        log.info("keeping the tables already in %s (%s); pass --force to regenerate", args.out, ", ".join(present))
        return 0
    tables = generate(args.applicants, seed=args.seed)
    for path in tables.write(args.out):
        log.info("wrote %s", path)
    train = tables.application_train
    log.info(
        "%d train / %d test applicants, %d bureau credits, default rate %.3f",
        len(train),
        len(tables.application_test),
        len(tables.bureau),
        train["TARGET"].mean(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
