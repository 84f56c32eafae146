"""Entry point: `python -m aftersales.followup` or `aftersales-followup`."""

from aftersales.followup.app import Settings, build
from aftersales.shared.main import run_service


def main() -> None:
    run_service("followup", Settings, build)


if __name__ == "__main__":
    main()
