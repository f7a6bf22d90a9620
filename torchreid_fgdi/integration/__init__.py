"""Where the plugin meets torchreid: the fixes to torchreid-pip (`compat`, applied and reverted in one place)
and torchreid's tables the plugin's datasets, models and samplers are registered in (`registry`)."""
