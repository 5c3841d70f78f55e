-- Application Auto Scaling: scalable targets (provisioned concurrency of an alias or version), their
-- target tracking policies and scheduled actions, and the scaling activities they caused.
CREATE TABLE scalable_targets (
    service_namespace   TEXT NOT NULL,
    resource_id         TEXT NOT NULL,
    scalable_dimension  TEXT NOT NULL,
    function_name       TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier           TEXT NOT NULL,
    arn                 TEXT NOT NULL,
    min_capacity        INTEGER NOT NULL,
    max_capacity        INTEGER NOT NULL,
    role_arn            TEXT NOT NULL,
    suspend_in          INTEGER NOT NULL DEFAULT 0,
    suspend_out         INTEGER NOT NULL DEFAULT 0,
    suspend_scheduled   INTEGER NOT NULL DEFAULT 0,
    tags                TEXT NOT NULL DEFAULT '{}',
    created             REAL NOT NULL,
    -- Epoch seconds of the last dynamic scale-out and scale-in, for the policies' cooldowns.
    last_scale_out      REAL,
    last_scale_in       REAL,
    PRIMARY KEY (service_namespace, resource_id, scalable_dimension)
);

CREATE TABLE scaling_policies (
    service_namespace   TEXT NOT NULL,
    resource_id         TEXT NOT NULL,
    scalable_dimension  TEXT NOT NULL,
    name                TEXT NOT NULL,
    arn                 TEXT NOT NULL,
    policy_type         TEXT NOT NULL,
    -- The TargetTrackingScalingPolicyConfiguration as sent, JSON.
    configuration       TEXT NOT NULL,
    -- The alarms AWS would have created for the policy, JSON [{AlarmName, AlarmARN}].
    alarms              TEXT NOT NULL,
    created             REAL NOT NULL,
    PRIMARY KEY (service_namespace, resource_id, scalable_dimension, name),
    FOREIGN KEY (service_namespace, resource_id, scalable_dimension)
        REFERENCES scalable_targets(service_namespace, resource_id, scalable_dimension) ON DELETE CASCADE
);

CREATE TABLE scheduled_actions (
    service_namespace   TEXT NOT NULL,
    resource_id         TEXT NOT NULL,
    scalable_dimension  TEXT NOT NULL,
    name                TEXT NOT NULL,
    arn                 TEXT NOT NULL,
    schedule            TEXT NOT NULL,
    timezone            TEXT,
    start_time          REAL,
    end_time            REAL,
    min_capacity        INTEGER,
    max_capacity        INTEGER,
    created             REAL NOT NULL,
    -- The scheduled time (epoch seconds) of the last occurrence carried out.
    last_run            REAL,
    PRIMARY KEY (service_namespace, resource_id, scalable_dimension, name),
    FOREIGN KEY (service_namespace, resource_id, scalable_dimension)
        REFERENCES scalable_targets(service_namespace, resource_id, scalable_dimension) ON DELETE CASCADE
);

-- Kept after their target is gone, as AWS keeps six weeks of activities.
CREATE TABLE scaling_activities (
    activity_id         TEXT PRIMARY KEY,
    service_namespace   TEXT NOT NULL,
    resource_id         TEXT NOT NULL,
    scalable_dimension  TEXT NOT NULL,
    description         TEXT NOT NULL,
    cause               TEXT NOT NULL,
    start_time          REAL NOT NULL,
    end_time            REAL,
    status_code         TEXT NOT NULL,
    status_message      TEXT,
    -- The provisioned concurrency an InProgress activity waits for; NULL for changes of min and max.
    desired             INTEGER,
    -- JSON [{Code, MinCapacity, MaxCapacity, CurrentCapacity}] of a not scaled activity, else NULL.
    not_scaled          TEXT
);
CREATE INDEX scaling_activities_by_target ON scaling_activities(service_namespace, resource_id, start_time);
CREATE INDEX scaling_activities_in_progress ON scaling_activities(status_code);
