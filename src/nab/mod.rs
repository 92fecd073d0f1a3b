//! NAB runner and scorer (to be written).
