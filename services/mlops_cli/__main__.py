"""``mlops`` (installed by ``make setup``) or ``python -m mlops_cli``."""

from mlops_cli.app import app


def main() -> None:
    app(prog_name="mlops")


if __name__ == "__main__":
    main()
