-- The runs that may still hold unresolved findings (a settled run holds none). Every query for
-- unresolved findings names them, ANY({unsettled_runs}), so it reads their findings through the
-- (run, key) index instead of the whole history kept. An ARRAY(subquery) is computed once per
-- statement (an InitPlan); a function call there would run again at each probe of a nested loop.
ARRAY(SELECT run_id FROM {ops}.runs WHERE settled_at IS NULL)
