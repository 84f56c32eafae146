"""Entry point: `python -m aftersales.notify` or `aftersales-notify`."""

from aftersales.notify.app import Settings, build
from aftersales.shared.main import run_service


def main() -> None:
    run_service("notify", Settings, build)


if __name__ == "__main__":
    main()
