-- What the control plane remembers of each CronJob: when it first saw it, the schedule time
-- of its last run, and its runs (those that run and those the history limits keep), as JSON
-- (`apply::cron::CronState`). A row goes when its CronJob leaves the applied commit.
CREATE TABLE cron_jobs (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
