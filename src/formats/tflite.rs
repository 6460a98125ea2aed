//! TFLite import (being written).
