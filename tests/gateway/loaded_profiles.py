"""The mapping profiles a test registry knows as loaded (name -> feed): the shipped ones, and those the tests
give registry settings to without a YAML file of their own."""

from __future__ import annotations

from collectors.mapping.profiles import builtin_profiles

MAPPING_PROFILES = {
    **{name: profile.feed for name, profile in builtin_profiles().items()},
    "ultrasonic-v1": "flood",
    "pm-sensor": "air",
    "p1": "air",
}
