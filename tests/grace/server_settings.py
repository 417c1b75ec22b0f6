"""Settings for real server processes in tests: the project's, with the test URLconf."""

from grace.settings import *  # noqa: F403

ROOT_URLCONF = "tests.grace.urls"
