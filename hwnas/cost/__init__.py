"""From a table to a network's cost: the cost model, dataflow graph, buffer planning, calibration and validation."""
