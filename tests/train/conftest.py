"""Fixtures of the training tests: a tiny fake cache and a teacher trained on it, once per session."""

import pytest

from tests.fake_cache import write_fake_cache


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return write_fake_cache(tmp_path_factory.mktemp("cache"), physio=True)


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory, cache):
    from tests.train.test_train import run_main

    workdir = tmp_path_factory.mktemp("teacher")
    run_main("teacher", workdir, cache)
    return workdir
