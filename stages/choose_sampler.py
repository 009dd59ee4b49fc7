"""Stage `choose_sampler`: check the `sampler` param against `samplers` (params `samplers`, `sampler`).

`train` depends on the chosen sampler's negatives only; DVC would stop at a missing folder
for an unknown name, so this stage, which train depends on, says first which names are valid.
"""

from gamerec import samplers
from gamerec.io import write_json
from gamerec.stage import paths, run_stage


def main() -> None:
    name = samplers.chosen()
    write_json(paths().chosen_sampler, {"sampler": name, "loss": samplers.get(name).loss})
    print(f"choose_sampler: train uses {name} (loss {samplers.get(name).loss})")


if __name__ == "__main__":
    run_stage(main)
