"""daimon_node package."""
