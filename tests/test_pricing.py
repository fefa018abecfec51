"""The accounting worker's price map: litellm's bundled map, read without importing litellm
(which cost the worker ~160 MiB), priced exactly as litellm prices every model."""

import subprocess
import sys

from switchyard.config import prepare_litellm_environment
from switchyard.workers.accounting.pricing import price_map

PRICES = ("input_cost_per_token", "output_cost_per_token")


def test_the_map_is_read_without_importing_litellm() -> None:
    code = (
        "import sys\n"
        "from switchyard.workers.accounting.pricing import price_map\n"
        "prices = price_map()\n"
        "assert prices['gpt-4o']['input_cost_per_token'] > 0, prices.get('gpt-4o')\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_every_model_costs_what_litellm_says() -> None:
    prepare_litellm_environment()
    import litellm  # the comparison is the point

    ours = price_map()
    assert set(ours) == set(litellm.model_cost)
    differ = [
        name
        for name, entry in litellm.model_cost.items()
        if any(entry.get(field) != ours[name].get(field) for field in PRICES)
    ]
    assert differ == []
    aliases = [name for name, entry in ours.items() if "alias_of" in entry]
    assert aliases == []  # an alias carries its model's prices, as in litellm
