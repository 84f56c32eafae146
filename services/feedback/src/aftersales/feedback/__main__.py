"""Entry point: `python -m aftersales.feedback` or `aftersales-feedback`."""

from aftersales.feedback.app import Settings, build
from aftersales.shared.main import run_service


def main() -> None:
    run_service("feedback", Settings, build)


if __name__ == "__main__":
    main()
