-- One promotion decision or alias move.
INSERT INTO ops.promotion_history
    (dataset, model_name, from_version, to_version, action, actor, reason, metrics, gate_reasons)
VALUES
    (%(dataset)s, %(model_name)s, %(from_version)s, %(to_version)s, %(action)s, %(actor)s, %(reason)s,
     %(metrics)s::jsonb, %(gate_reasons)s::jsonb)
RETURNING id
