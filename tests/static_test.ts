import { assert, assertEquals } from "node:assert/strict";
