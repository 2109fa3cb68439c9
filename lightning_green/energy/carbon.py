"""Carbon intensity of the electricity grid and the data-centre PUE factor.

CO2 is only reported where a carbon intensity is known: given as an argument, through the
``LIGHTNING_GREEN_CARBON_INTENSITY`` environment variable (grams CO2-eq per kWh, or a region
code from :data:`CARBON_INTENSITY_G_PER_KWH`), or looked up from a region code.
"""

from __future__ import annotations

import os

from lightning_green.checks import as_plain, check_at_least, check_non_negative

_INTENSITY_UNIT = "grams CO2-eq per kWh"

CARBON_INTENSITY_ENV: str = "LIGHTNING_GREEN_CARBON_INTENSITY"
"""Environment variable: grid carbon intensity in gCO2e/kWh, or a region code of the table."""

# Annual average life-cycle carbon intensity of electricity generation, gCO2e/kWh, 2023
# (Ember, "Yearly electricity data", generation-weighted). Rounded; a fair default where the
# user has no better figure for their data centre's grid or contract.
CARBON_INTENSITY_G_PER_KWH: dict[str, float] = {
    "WORLD": 480.0,
    "EU": 240.0,
    "AT": 100.0,
    "AU": 500.0,
    "BE": 130.0,
    "BR": 100.0,
    "CA": 130.0,
    "CH": 40.0,
    "CN": 580.0,
    "DE": 380.0,
    "DK": 150.0,
    "ES": 170.0,
    "FI": 80.0,
    "FR": 55.0,
    "GB": 220.0,
    "IE": 290.0,
    "IN": 710.0,
    "IT": 330.0,
    "JP": 480.0,
    "KR": 430.0,
    "NL": 270.0,
    "NO": 30.0,
    "PL": 660.0,
    "SE": 40.0,
    "SG": 470.0,
    "US": 370.0,
    "ZA": 710.0,
}


def resolve_carbon_intensity_g_per_kwh(
    carbon_intensity_g_per_kwh: float | None = None,
    region: str | None = None,
) -> tuple[float | None, str]:
    """The grid carbon intensity to report CO2 with, and where it came from.

    Precedence: the explicit number, then the region code, then the environment variable. A
    ``region`` is checked even where an explicit number takes precedence over it.

    Args:
        carbon_intensity_g_per_kwh: Grams CO2-eq per kWh, or None.
        region: A key of :data:`CARBON_INTENSITY_G_PER_KWH` (ISO 3166 alpha-2, ``EU``,
            ``WORLD``), case-insensitive, or None.

    Returns:
        ``(g_per_kwh, origin)``; ``(None, "unknown")`` when no intensity is known, in which
        case CO2 is not reported.

    Raises:
        ValueError: For a negative or non-finite intensity, or a ``region`` that is not a known
            region code (a boolean ``region`` is what YAML 1.1 makes of an unquoted ``NO``).

    Example:
        >>> resolve_carbon_intensity_g_per_kwh(region="fr")
        (55.0, 'region FR')
        >>> resolve_carbon_intensity_g_per_kwh(300)
        (300.0, 'argument')
    """
    key = None if region is None else region_code(region)
    if carbon_intensity_g_per_kwh is not None:
        intensity = check_non_negative(
            "carbon_intensity_g_per_kwh", carbon_intensity_g_per_kwh, unit=_INTENSITY_UNIT
        )
        return intensity, "argument"
    if key is not None:
        return CARBON_INTENSITY_G_PER_KWH[key], f"region {key}"
    env = os.environ.get(CARBON_INTENSITY_ENV, "").strip()
    if not env:
        return None, "unknown"
    try:
        value = float(env)
    except ValueError:
        key = region_code(env, CARBON_INTENSITY_ENV)
        return CARBON_INTENSITY_G_PER_KWH[key], f"{CARBON_INTENSITY_ENV} region {key}"
    # The text was parsed here; the message quotes it as set.
    return check_non_negative(
        CARBON_INTENSITY_ENV, value, unit=_INTENSITY_UNIT, given=env
    ), CARBON_INTENSITY_ENV


def region_code(region: object, name: str = "region") -> str:
    """The key of :data:`CARBON_INTENSITY_G_PER_KWH` a region argument names (stripped, upper case).

    Args:
        region: A region code, case-insensitive (a NumPy string counts as a string).
        name: The argument's name, for the message.

    Returns:
        The code as the table spells it.

    Raises:
        ValueError: Naming the argument and the allowed codes, for a value that is not a known
            code. A boolean says that YAML 1.1 (Hydra/OmegaConf, LightningCLI) reads an unquoted
            ``NO`` (Norway), ``no``, ``off`` as False and ``yes``, ``on`` as True, and to quote it.

    Example:
        >>> region_code(" fr ")
        'FR'
        >>> region_code(False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: region=False is a boolean, not a region code: YAML 1.1 ... e.g. region: 'NO'. Allowed: ...
    """
    allowed = ", ".join(sorted(CARBON_INTENSITY_G_PER_KWH))
    plain = as_plain(region)
    if isinstance(plain, bool):
        raise ValueError(
            f"{name}={region!r} is a boolean, not a region code: YAML 1.1 (Hydra/OmegaConf, LightningCLI "
            "configs) reads an unquoted NO (Norway), no or off as False and yes or on as True; quote the "
            f"code, e.g. {name}: 'NO'. Allowed: {allowed}"
        )
    if not isinstance(plain, str):
        raise ValueError(f"{name} must be a region code (a string), got {region!r}; allowed: {allowed}")
    key = plain.strip().upper()
    if key not in CARBON_INTENSITY_G_PER_KWH:
        raise ValueError(f"{name}={region!r} is not a known region code; allowed: {allowed}")
    return key


def validate_pue(pue: float) -> float:
    """Check a power usage effectiveness factor.

    Args:
        pue: Facility energy over IT energy; 1.0 counts the IT equipment alone. NumPy and
            0-dim torch numbers are accepted like Python numbers; bools and text are not.

    Returns:
        The factor as a float.

    Raises:
        ValueError: If it is not a finite number >= 1.0.

    Example:
        >>> validate_pue(1.2)
        1.2
    """
    return check_at_least("pue", pue, 1.0, what="facility energy / IT energy")


def co2_kg(energy_kwh: float, intensity_g_per_kwh: float) -> float:
    """CO2-eq in kilograms for an energy and a grid intensity.

    Args:
        energy_kwh: Energy in kWh (PUE already applied).
        intensity_g_per_kwh: Grid carbon intensity in gCO2e/kWh.

    Returns:
        Kilograms of CO2-eq.

    Example:
        >>> co2_kg(2.0, 500.0)
        1.0
    """
    return energy_kwh * intensity_g_per_kwh / 1000.0
