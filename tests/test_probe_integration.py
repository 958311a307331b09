"""One short probe of the real default model (SmolLM2-135M-Instruct) on default-style facts."""

import json

import pytest

from knowpack.facts.schema import Fact
from knowpack.probe.config import ProbeConfig
from knowpack.probe.runner import run_probe

ROWS = [  # (relation, subject, question, answer, aliases)
    ("capital_of_country", "France", "What is the capital of France?", "Paris", []),
    ("country_of_city", "Solingen", "In which country is the city of Solingen?", "Germany", []),
    ("country_of_city", "Chengxiang", "In which country is the city of Chengxiang?", "China", []),
    ("discoverer_of_element", "Polonium", "Who discovered the element Polonium?", "Marie Curie", ["Curie"]),
    ("country_of_city", "Pullman", "In which country is the city of Pullman?", "United States",
     ["USA", "United States of America"]),
    ("us_state_of_city", "Morgantown", "In which U.S. state is the city of Morgantown?", "West Virginia", ["WV"]),
    ("currency_of_iso4217_code", "MWK", "Which currency has the ISO 4217 code MWK?", "Malawian Kwacha",
     ["Malawi Kwacha"]),
    ("country_of_capital", "Basseterre", "Basseterre is the capital of which country?", "Saint Kitts and Nevis",
     ["St. Kitts & Nevis"]),
    ("capital_of_country", "Kyrgyzstan", "What is the capital of Kyrgyzstan?", "Bishkek", []),
    ("city_of_airport_code", "SWW", "Which city is served by the airport with IATA code SWW?", "Sweetwater", []),
    # shot pool: 2 prompts × 2 shots
    ("capital_of_country", "Italy", "What is the capital of Italy?", "Rome", []),
    ("element_of_symbol", "Au", "Which chemical element has the symbol Au?", "Gold", []),
    ("country_of_city", "Lyon", "In which country is the city of Lyon?", "France", []),
    ("us_state_of_city", "Austin", "In which U.S. state is the city of Austin?", "Texas", []),
]


@pytest.mark.integration
def test_default_model_knows_some_facts_and_not_others(tmp_path):
    facts = [Fact(id=f"i{i}", subject=s, relation=r, question=q, answer=a, aliases=[a, *al])
             for i, (r, s, q, a, al) in enumerate(ROWS)]
    cfg = ProbeConfig(prompts=2, shots=2, samples=0, max_new_tokens=12, batch_size=16)
    summary = run_probe(cfg, facts[:10], "default", tmp_path, shot_pool=facts[10:], progress=False)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "categories.jsonl").read_text().splitlines())}
    assert summary.n == 10
    known = {i for i, r in rows.items() if r["category"] in ("HighlyKnown", "MaybeKnown")}
    assert known and len(known) < len(rows)
    assert rows["i0"]["category"] == "HighlyKnown"  # Paris
