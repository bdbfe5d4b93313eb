"""nakhon rules: YAML rules, per-device evaluation, the alert lifecycle store and notifications.

    rules (YAML, pydantic) -> RulesEngine.process/tick -> AlertLifecycle (store) -> NotificationPipeline -> notifiers

The component never imports the `nakhon` app shell; the shell wires it with `rules.service.build_rules_service`.
"""
